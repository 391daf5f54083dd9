"""stripe_calls.stripe_version: versions in use, seen by every process

Revision ID: 0006_stripe_call_version
Revises: 0005_webhooks
Create Date: 2026-11-22 05:20:48.284062

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0006_stripe_call_version'
down_revision = '0005_webhooks'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('stripe_calls', schema=None) as batch_op:
        batch_op.add_column(sa.Column('stripe_version', sa.String(length=64), nullable=True))



def downgrade():
    with op.batch_alter_table('stripe_calls', schema=None) as batch_op:
        batch_op.drop_column('stripe_version')

