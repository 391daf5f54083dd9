"""fenced operation phases, ordering on the object's row, flagged duplicates, deleted customers

- payment_operations: recovery point, owner token (fencing), the Stripe object made;
- client_idempotency_keys: the owner token and lease of the request holding the key;
- customers, subscriptions, payment_outcomes: the last applied event (created, rank, id),
  so that ordering is one read of the row instead of a scan of the object's history;
- subscriptions.duplicate_of: a second live subscription Stripe holds is stored flagged;
  the live index leaves flagged rows out, and counts a paused subscription as live;
- deleted_stripe_customers: kept for good (the inbox, which told it before, is purged).

Revision ID: 0008_fenced_phases
Revises: 0007_customer_event_index
Create Date: 2026-12-05 21:30:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0008_fenced_phases'
down_revision = '0007_customer_event_index'
branch_labels = None
depends_on = None

OLD_LIVE_STATUSES = "'active', 'trialing', 'past_due', 'unpaid', 'incomplete'"
OLD_LIVE = sa.text(f"status IN ({OLD_LIVE_STATUSES})")
NEW_LIVE_STATUSES = OLD_LIVE_STATUSES + ", 'paused'"
NEW_LIVE = sa.text("status IN ('active', 'trialing', 'past_due', 'unpaid', 'incomplete', 'paused') "
                   "AND duplicate_of IS NULL")
CUSTOMER_EVENTS = sa.text("type IN ('customer.created', 'customer.updated', 'customer.deleted')")
RANKS = {'customer.created': 0, 'customer.updated': 1, 'customer.deleted': 2}


def _last_event_columns(batch_op):
    batch_op.add_column(sa.Column('last_event_rank', sa.SmallInteger(), nullable=True))
    batch_op.add_column(sa.Column('last_event_id', sa.String(length=255), nullable=True))


def upgrade():
    with op.batch_alter_table('payment_operations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('recovery_point', sa.String(length=32), nullable=False,
                                      server_default='claimed'))
        batch_op.add_column(sa.Column('recovery_point_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('owner_token', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('stripe_object_id', sa.String(length=255), nullable=True))
        batch_op.create_index('ix_payment_operations_owner_token', ['owner_token'], unique=False)
    op.execute("UPDATE payment_operations SET recovery_point = 'finished' WHERE status = 'succeeded'")
    # An operation left pending by the code before may have sent its create: a resume replays it
    # first (and, past Stripe's key memory, looks on Stripe first: recovery_point_at is its age).
    op.execute("UPDATE payment_operations SET recovery_point = 'create_sent' "
               "WHERE status = 'pending' AND operation = 'subscription.create'")
    op.execute("UPDATE payment_operations SET recovery_point_at = updated_at")
    with op.batch_alter_table('payment_operations', schema=None) as batch_op:
        batch_op.alter_column('recovery_point', server_default=None)

    with op.batch_alter_table('client_idempotency_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('owner_token', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True))

    with op.batch_alter_table('customers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('last_event_at', sa.DateTime(timezone=True), nullable=True))
        _last_event_columns(batch_op)

    with op.batch_alter_table('subscriptions', schema=None) as batch_op:
        _last_event_columns(batch_op)
        batch_op.add_column(sa.Column('duplicate_of', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_subscriptions_duplicate_of_subscriptions'), 'subscriptions',
                                    ['duplicate_of'], ['id'])
    # A paused subscription now holds its customer and price: one the code before let stand beside
    # a live one is flagged as its duplicate (the oldest holds the pair), or the index would fail.
    op.execute(f"""
        UPDATE subscriptions SET duplicate_of = (
            SELECT MIN(o.id) FROM subscriptions o
            WHERE o.customer_id = subscriptions.customer_id AND o.price_id = subscriptions.price_id
              AND o.status IN ({NEW_LIVE_STATUSES}))
        WHERE status IN ({NEW_LIVE_STATUSES}) AND id > (
            SELECT MIN(o.id) FROM subscriptions o
            WHERE o.customer_id = subscriptions.customer_id AND o.price_id = subscriptions.price_id
              AND o.status IN ({NEW_LIVE_STATUSES}))""")
    with op.batch_alter_table('subscriptions', schema=None) as batch_op:
        batch_op.drop_index('uq_subscriptions_live_customer_price', sqlite_where=OLD_LIVE, postgresql_where=OLD_LIVE)
        batch_op.create_index('uq_subscriptions_live_customer_price', ['customer_id', 'price_id'], unique=True,
                              sqlite_where=NEW_LIVE, postgresql_where=NEW_LIVE)
    # What a row had applied before was an event of unknown kind: ranked as an update.
    op.execute("UPDATE subscriptions SET last_event_rank = 1 WHERE last_event_at IS NOT NULL")

    with op.batch_alter_table('payment_outcomes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('last_event_id', sa.String(length=255), nullable=True))

    deleted = op.create_table('deleted_stripe_customers',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('stripe_customer_id', sa.String(length=255), nullable=False),
        sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_deleted_stripe_customers')),
        sa.UniqueConstraint('stripe_customer_id', name=op.f('uq_deleted_stripe_customers_stripe_customer_id'))
    )
    _carry_over_customer_history(deleted)

    # Customer events are no longer compared with their object's history in the inbox.
    op.drop_index('ix_webhook_events_customer_object_id', table_name='webhook_events',
                  sqlite_where=CUSTOMER_EVENTS, postgresql_where=CUSTOMER_EVENTS)


def _carry_over_customer_history(deleted):
    """What the inbox knew of each customer's order and deletion moves onto rows. Typed tables:
    SQLite hands back its timestamps as text unless told they are timestamps."""
    connection = op.get_bind()
    events = sa.table("webhook_events", sa.column("object_id", sa.String), sa.column("type", sa.String),
                      sa.column("event_id", sa.String), sa.column("status", sa.String),
                      sa.column("created", sa.DateTime(timezone=True)))
    customers = sa.table("customers", sa.column("stripe_customer_id", sa.String),
                         sa.column("last_event_at", sa.DateTime(timezone=True)),
                         sa.column("last_event_rank", sa.SmallInteger), sa.column("last_event_id", sa.String))
    rows = connection.execute(sa.select(events.c.object_id, events.c.created, events.c.type, events.c.event_id)
                              .where(events.c.type.in_(list(RANKS)), events.c.status == "processed",
                                     events.c.object_id.is_not(None))).all()
    newest, deletions = {}, {}
    for object_id, created, event_type, event_id in rows:
        key = (created, RANKS[event_type], event_id)
        if object_id not in newest or key > newest[object_id]:
            newest[object_id] = key
        if event_type == 'customer.deleted':
            deletions.setdefault(object_id, created)
    if deletions:
        connection.execute(deleted.insert(), [{"stripe_customer_id": object_id, "deleted_at": created}
                                              for object_id, created in deletions.items()])
    for object_id, (created, rank, event_id) in newest.items():
        if object_id not in deletions:
            connection.execute(customers.update().where(customers.c.stripe_customer_id == object_id).values(
                last_event_at=created, last_event_rank=rank, last_event_id=event_id))


def downgrade():
    op.create_index('ix_webhook_events_customer_object_id', 'webhook_events', ['object_id'], unique=False,
                    sqlite_where=CUSTOMER_EVENTS, postgresql_where=CUSTOMER_EVENTS)
    op.drop_table('deleted_stripe_customers')
    with op.batch_alter_table('payment_outcomes', schema=None) as batch_op:
        batch_op.drop_column('last_event_id')
    with op.batch_alter_table('subscriptions', schema=None) as batch_op:
        batch_op.drop_index('uq_subscriptions_live_customer_price', sqlite_where=NEW_LIVE, postgresql_where=NEW_LIVE)
    # A flagged duplicate that the old index cannot hold beside another live row of its customer
    # and price loses its live status; one whose original ended keeps it.
    op.execute(f"""
        UPDATE subscriptions SET status = 'canceled'
        WHERE duplicate_of IS NOT NULL AND status IN ({OLD_LIVE_STATUSES}) AND EXISTS (
            SELECT 1 FROM subscriptions o
            WHERE o.customer_id = subscriptions.customer_id AND o.price_id = subscriptions.price_id
              AND o.status IN ({OLD_LIVE_STATUSES}) AND o.id <> subscriptions.id
              AND (o.duplicate_of IS NULL OR o.id < subscriptions.id))""")
    op.execute("UPDATE subscriptions SET duplicate_of = NULL")
    with op.batch_alter_table('subscriptions', schema=None) as batch_op:
        batch_op.create_index('uq_subscriptions_live_customer_price', ['customer_id', 'price_id'], unique=True,
                              sqlite_where=OLD_LIVE, postgresql_where=OLD_LIVE)
        batch_op.drop_constraint(batch_op.f('fk_subscriptions_duplicate_of_subscriptions'), type_='foreignkey')
        batch_op.drop_column('duplicate_of')
        batch_op.drop_column('last_event_id')
        batch_op.drop_column('last_event_rank')
    with op.batch_alter_table('customers', schema=None) as batch_op:
        batch_op.drop_column('last_event_id')
        batch_op.drop_column('last_event_rank')
        batch_op.drop_column('last_event_at')
    with op.batch_alter_table('client_idempotency_keys', schema=None) as batch_op:
        batch_op.drop_column('lease_expires_at')
        batch_op.drop_column('owner_token')
    with op.batch_alter_table('payment_operations', schema=None) as batch_op:
        batch_op.drop_index('ix_payment_operations_owner_token')
        batch_op.drop_column('stripe_object_id')
        batch_op.drop_column('owner_token')
        batch_op.drop_column('recovery_point_at')
        batch_op.drop_column('recovery_point')
