"""rate_limit_violations: a counter per client IP, endpoint, user agent and minute

Blocked requests were a row each (1,320 rows from one IP in a 10 s flood). Existing rows
that share all four keys are folded into one counter; the others keep their exact time
and a count of 1, so every count over time stays what it was. The downgrade spreads each
counter back into as many rows.

Revision ID: 0012_rate_limit_counters
Revises: 0011_dashboard_counts
Create Date: 2026-12-06 03:40:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0012_rate_limit_counters'
down_revision = '0011_dashboard_counts'
branch_labels = None
depends_on = None

KEYS = 'occurred_at, client_ip, endpoint, user_agent'


def upgrade():
    with op.batch_alter_table('rate_limit_violations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('count', sa.Integer(), server_default='1', nullable=False))
        batch_op.add_column(sa.Column('last_at', sa.DateTime(timezone=True), nullable=True))
    op.execute('UPDATE rate_limit_violations SET last_at = occurred_at')
    op.execute(
        'UPDATE rate_limit_violations SET count = (SELECT count(*) FROM rate_limit_violations AS o'
        ' WHERE o.occurred_at = rate_limit_violations.occurred_at AND o.client_ip = rate_limit_violations.client_ip'
        ' AND o.endpoint = rate_limit_violations.endpoint AND o.user_agent = rate_limit_violations.user_agent)'
        f' WHERE id IN (SELECT min(id) FROM rate_limit_violations GROUP BY {KEYS} HAVING count(*) > 1)'
    )
    op.execute(
        'DELETE FROM rate_limit_violations'
        f' WHERE id NOT IN (SELECT min(id) FROM rate_limit_violations GROUP BY {KEYS})'
    )
    with op.batch_alter_table('rate_limit_violations', schema=None) as batch_op:
        batch_op.create_unique_constraint('uq_rate_limit_violations_counter',
                                          ['occurred_at', 'client_ip', 'endpoint', 'user_agent'])


def downgrade():
    # A row per blocked request again: each counter's extra blocks become copies of it.
    with op.batch_alter_table('rate_limit_violations', schema=None) as batch_op:
        batch_op.drop_constraint('uq_rate_limit_violations_counter', type_='unique')
    op.execute(
        'INSERT INTO rate_limit_violations (client_ip, user_agent, endpoint, "limit", occurred_at, count)'
        ' WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n'
        '  WHERE i < (SELECT max(count) FROM rate_limit_violations))'
        ' SELECT v.client_ip, v.user_agent, v.endpoint, v."limit", v.occurred_at, 1'
        ' FROM rate_limit_violations AS v JOIN n ON n.i < v.count'
    )
    with op.batch_alter_table('rate_limit_violations', schema=None) as batch_op:
        batch_op.drop_column('last_at')
        batch_op.drop_column('count')
