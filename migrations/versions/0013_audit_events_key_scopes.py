"""audit_events (was audit_log) for the dashboard and the CLI; API key scopes and expiry

- audit_log becomes audit_events: the same columns, written by the dashboard's admin actions
  and by the CLI commands that manage keys and users or act as an admin. Made as a new table
  with the rows copied over, so its constraints and indexes carry the new name on SQLite too;
- api_keys.scopes: space-separated; NULL is a full key, so every existing key keeps what it
  could do;
- api_keys.expires_at: a key is refused after it.

The downgrade revokes restricted and expiring keys: the older code would take them as full.

Revision ID: 0013_audit_events_key_scopes
Revises: 0012_rate_limit_counters
Create Date: 2026-12-06 06:00:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0013_audit_events_key_scopes'
down_revision = '0012_rate_limit_counters'
branch_labels = None
depends_on = None

COLUMNS = 'id, occurred_at, actor, action, target, outcome, detail, client_ip'


def _audit_table(name):
    op.create_table(
        name,
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('actor', sa.String(length=254), nullable=False),
        sa.Column('action', sa.String(length=64), nullable=False),
        sa.Column('target', sa.String(length=255), nullable=False),
        sa.Column('outcome', sa.String(length=16), nullable=False),
        sa.Column('detail', sa.String(length=500), nullable=True),
        sa.Column('client_ip', sa.String(length=64), nullable=True),
        sa.CheckConstraint("outcome IN ('ok', 'failed', 'refused')", name=op.f(f'ck_{name}_outcome')),
        sa.PrimaryKeyConstraint('id', name=op.f(f'pk_{name}')),
    )
    op.create_index(op.f(f'ix_{name}_occurred_at'), name, ['occurred_at'], unique=False)
    op.create_index(op.f(f'ix_{name}_actor'), name, ['actor'], unique=False)


def _move(source, target):
    _audit_table(target)
    op.execute(f'INSERT INTO {target} ({COLUMNS}) SELECT {COLUMNS} FROM {source}')
    if op.get_bind().dialect.name == 'postgresql':
        # The ids were copied: the new table's sequence continues after them.
        op.execute(
            f"SELECT setval(pg_get_serial_sequence('{target}', 'id'), COALESCE(max(id), 1), max(id) IS NOT NULL)"
            f' FROM {target}'
        )
    op.drop_index(op.f(f'ix_{source}_actor'), table_name=source)
    op.drop_index(op.f(f'ix_{source}_occurred_at'), table_name=source)
    op.drop_table(source)


def upgrade():
    _move('audit_log', 'audit_events')
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('scopes', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True))


def downgrade():
    # The older code cannot enforce a scope or an expiry: it would take a restricted or
    # expiring key as a full one for ever. Those keys are revoked instead.
    op.execute(
        'UPDATE api_keys SET revoked_at = CURRENT_TIMESTAMP'
        ' WHERE revoked_at IS NULL AND (scopes IS NOT NULL OR expires_at IS NOT NULL)'
    )
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_column('expires_at')
        batch_op.drop_column('scopes')
    _move('audit_events', 'audit_log')
