"""webhook inbox, rate limit violations, payment outcomes

Revision ID: 0005_webhooks
Revises: 0004_versioning
Create Date: 2026-11-22 04:20:42.145869

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0005_webhooks'
down_revision = '0004_versioning'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('payment_outcomes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('stripe_object_id', sa.String(length=255), nullable=False),
    sa.Column('stripe_customer_id', sa.String(length=255), nullable=True),
    sa.Column('amount', sa.BigInteger(), nullable=True),
    sa.Column('currency', sa.String(length=3), nullable=True),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('failure_code', sa.String(length=64), nullable=True),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("outcome IN ('succeeded', 'failed')", name=op.f('ck_payment_outcomes_outcome')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_payment_outcomes')),
    sa.UniqueConstraint('stripe_object_id', name=op.f('uq_payment_outcomes_stripe_object_id'))
    )
    with op.batch_alter_table('payment_outcomes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_payment_outcomes_occurred_at'), ['occurred_at'], unique=False)

    op.create_table('rate_limit_violations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('client_ip', sa.String(length=64), nullable=False),
    sa.Column('user_agent', sa.String(length=256), nullable=False),
    sa.Column('endpoint', sa.String(length=255), nullable=False),
    sa.Column('limit', sa.String(length=64), nullable=False),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rate_limit_violations'))
    )
    with op.batch_alter_table('rate_limit_violations', schema=None) as batch_op:
        batch_op.create_index('ix_rate_limit_violations_client_ip_occurred_at', ['client_ip', 'occurred_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_rate_limit_violations_occurred_at'), ['occurred_at'], unique=False)

    op.create_table('webhook_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('event_id', sa.String(length=255), nullable=False),
    sa.Column('type', sa.String(length=128), nullable=False),
    sa.Column('api_version', sa.String(length=64), nullable=True),
    sa.Column('livemode', sa.Boolean(), nullable=False),
    sa.Column('object_id', sa.String(length=255), nullable=True),
    sa.Column('created', sa.DateTime(timezone=True), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('processed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.String(length=500), nullable=True),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.CheckConstraint("status IN ('processed', 'ignored', 'failed')", name=op.f('ck_webhook_events_status')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_events')),
    sa.UniqueConstraint('event_id', name=op.f('uq_webhook_events_event_id'))
    )
    with op.batch_alter_table('webhook_events', schema=None) as batch_op:
        batch_op.create_index('ix_webhook_events_object_id', ['object_id'], unique=False)
        batch_op.create_index('ix_webhook_events_received_at', ['received_at'], unique=False)


def downgrade():
    with op.batch_alter_table('webhook_events', schema=None) as batch_op:
        batch_op.drop_index('ix_webhook_events_received_at')
        batch_op.drop_index('ix_webhook_events_object_id')

    op.drop_table('webhook_events')
    with op.batch_alter_table('rate_limit_violations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_rate_limit_violations_occurred_at'))
        batch_op.drop_index('ix_rate_limit_violations_client_ip_occurred_at')

    op.drop_table('rate_limit_violations')
    with op.batch_alter_table('payment_outcomes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_payment_outcomes_occurred_at'))

    op.drop_table('payment_outcomes')
