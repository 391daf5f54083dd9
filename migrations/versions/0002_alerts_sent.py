"""alerts_sent: cross-process alert de-duplication

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 04:12:05.407102

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('alerts_sent',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('dedup_key', sa.String(length=255), nullable=False),
    sa.Column('period', sa.String(length=16), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_alerts_sent')),
    sa.UniqueConstraint('dedup_key', 'period', name=op.f('uq_alerts_sent_dedup_key'))
    )


def downgrade():
    op.drop_table('alerts_sent')
