"""per-minute counts for the dashboard, and the indexes its filters use

- minute_counts / rollup_marks: each closed minute of an append-only table counted once
  (kamiyo/rollups.py), so a 7-day chart sums 10,080 rows per key instead of scanning millions;
- webhook_events (status, received_at): failed and ignored counts, and the status filter;
- stripe_calls (outcome, created_at): the outcome filter; (created_at) becomes (created_at,
  outcome, attempt), which covers the count of the minutes not yet rolled up.

Revision ID: 0010_rollups
Revises: 0009_dashboard
Create Date: 2026-12-06 03:20:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0010_rollups'
down_revision = '0009_dashboard'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'minute_counts',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('source', sa.String(length=32), nullable=False),
        sa.Column('minute', sa.DateTime(timezone=True), nullable=False),
        sa.Column('key', sa.String(length=64), nullable=False),
        sa.Column('count', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_minute_counts')),
        sa.UniqueConstraint('source', 'minute', 'key', name=op.f('uq_minute_counts_source')),
    )
    op.create_table(
        'rollup_marks',
        sa.Column('source', sa.String(length=32), nullable=False),
        sa.Column('rolled_until', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('source', name=op.f('pk_rollup_marks')),
    )
    op.create_index('ix_webhook_events_status_received_at', 'webhook_events', ['status', 'received_at'])
    op.create_index('ix_stripe_calls_outcome_created_at', 'stripe_calls', ['outcome', 'created_at'])
    op.drop_index('ix_stripe_calls_created_at', table_name='stripe_calls')
    op.create_index('ix_stripe_calls_created_at_outcome_attempt', 'stripe_calls',
                    ['created_at', 'outcome', 'attempt'])


def downgrade():
    op.drop_index('ix_stripe_calls_created_at_outcome_attempt', table_name='stripe_calls')
    op.create_index('ix_stripe_calls_created_at', 'stripe_calls', ['created_at'])
    op.drop_index('ix_stripe_calls_outcome_created_at', table_name='stripe_calls')
    op.drop_index('ix_webhook_events_status_received_at', table_name='webhook_events')
    op.drop_table('rollup_marks')
    op.drop_table('minute_counts')
