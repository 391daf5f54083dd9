"""indexes for the dashboard's counts on tables that are never purged

- payment_operations (status, updated_at): in flight and failed (few), succeeded in 24 h;
- payment_operations (generation) where generation > 0: superseded operations;
- subscriptions (duplicate_of) where it is set: flagged duplicates.

Revision ID: 0011_dashboard_counts
Revises: 0010_rollups
Create Date: 2026-12-06 04:10:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0011_dashboard_counts'
down_revision = '0010_rollups'
branch_labels = None
depends_on = None


def upgrade():
    op.create_index('ix_payment_operations_status_updated_at', 'payment_operations', ['status', 'updated_at'])
    op.create_index('ix_payment_operations_superseded', 'payment_operations', ['generation'],
                    sqlite_where=sa.text('generation > 0'), postgresql_where=sa.text('generation > 0'))
    op.create_index('ix_subscriptions_flagged', 'subscriptions', ['duplicate_of'],
                    sqlite_where=sa.text('duplicate_of IS NOT NULL'),
                    postgresql_where=sa.text('duplicate_of IS NOT NULL'))


def downgrade():
    op.drop_index('ix_subscriptions_flagged', table_name='subscriptions')
    op.drop_index('ix_payment_operations_superseded', table_name='payment_operations')
    op.drop_index('ix_payment_operations_status_updated_at', table_name='payment_operations')
