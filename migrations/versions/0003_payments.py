"""payments: operations, client idempotency keys, stripe calls

Revision ID: 0003_payments
Revises: 0002
Create Date: 2026-11-22 04:18:07.523491

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0003_payments'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('client_idempotency_keys',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('api_key_id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('response_status', sa.Integer(), nullable=True),
    sa.Column('response_body', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_client_idempotency_keys')),
    sa.UniqueConstraint('api_key_id', 'key', name=op.f('uq_client_idempotency_keys_api_key_id'))
    )
    op.create_table('payment_operations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('operation', sa.String(length=64), nullable=False),
    sa.Column('scope', sa.String(length=255), nullable=False),
    sa.Column('user_id', sa.String(length=128), nullable=False),
    sa.Column('params_json', sa.Text(), nullable=False),
    sa.Column('generation', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('result_id', sa.Integer(), nullable=True),
    sa.Column('error_code', sa.String(length=64), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_payment_operations')),
    sa.UniqueConstraint('scope', name=op.f('uq_payment_operations_scope'))
    )
    op.create_table('stripe_calls',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('operation', sa.String(length=64), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('error_type', sa.String(length=64), nullable=True),
    sa.Column('http_status', sa.Integer(), nullable=True),
    sa.Column('stripe_request_id', sa.String(length=64), nullable=True),
    sa.Column('duration_ms', sa.Double(), nullable=False),
    sa.Column('request_id', sa.String(length=64), nullable=True),
    sa.Column('idempotency_key_prefix', sa.String(length=8), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_stripe_calls'))
    )
    with op.batch_alter_table('stripe_calls', schema=None) as batch_op:
        batch_op.create_index('ix_stripe_calls_created_at', ['created_at'], unique=False)

    with op.batch_alter_table('subscriptions', schema=None) as batch_op:
        batch_op.create_index('uq_subscriptions_live_customer_price', ['customer_id', 'price_id'], unique=True, sqlite_where=sa.text("status IN ('active', 'trialing', 'past_due', 'unpaid', 'incomplete')"), postgresql_where=sa.text("status IN ('active', 'trialing', 'past_due', 'unpaid', 'incomplete')"))



def downgrade():
    with op.batch_alter_table('subscriptions', schema=None) as batch_op:
        batch_op.drop_index('uq_subscriptions_live_customer_price', sqlite_where=sa.text("status IN ('active', 'trialing', 'past_due', 'unpaid', 'incomplete')"), postgresql_where=sa.text("status IN ('active', 'trialing', 'past_due', 'unpaid', 'incomplete')"))

    with op.batch_alter_table('stripe_calls', schema=None) as batch_op:
        batch_op.drop_index('ix_stripe_calls_created_at')

    op.drop_table('stripe_calls')
    op.drop_table('payment_operations')
    op.drop_table('client_idempotency_keys')
