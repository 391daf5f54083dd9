"""webhook_events: index object_id for customer events only

Only customer events are checked against earlier events of the same object;
indexing every payment and subscription event's object id cost each of them a
write at a random place in the index.

Revision ID: 0007_customer_event_index
Revises: 0006_stripe_call_version
Create Date: 2026-11-22 06:20:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0007_customer_event_index'
down_revision = '0006_stripe_call_version'
branch_labels = None
depends_on = None

CUSTOMER_EVENTS = sa.text("type IN ('customer.created', 'customer.updated', 'customer.deleted')")


def upgrade():
    op.drop_index('ix_webhook_events_object_id', table_name='webhook_events')
    op.create_index('ix_webhook_events_customer_object_id', 'webhook_events', ['object_id'], unique=False,
                    sqlite_where=CUSTOMER_EVENTS, postgresql_where=CUSTOMER_EVENTS)


def downgrade():
    op.drop_index('ix_webhook_events_customer_object_id', table_name='webhook_events')
    op.create_index('ix_webhook_events_object_id', 'webhook_events', ['object_id'], unique=False)
