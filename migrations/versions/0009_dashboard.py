"""the ops dashboard: disabled users and session invalidation, the audit log, job reports

- dashboard_users.disabled_at: a disabled user cannot sign in, and loses every session;
- dashboard_users.session_version: part of the session's user id, so raising it (logout,
  disable) ends every session of that user, in every browser and worker;
- audit_log: every admin action, who, what, when and the outcome;
- job_runs.summary: what a run returned (the nightly reconcile's report, say), as JSON.

Revision ID: 0009_dashboard
Revises: 0008_fenced_phases
Create Date: 2026-12-06 03:00:00

"""
from alembic import op
import sqlalchemy as sa



revision = '0009_dashboard'
down_revision = '0008_fenced_phases'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('dashboard_users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('disabled_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('session_version', sa.Integer(), nullable=False, server_default='0'))
    with op.batch_alter_table('job_runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('summary', sa.Text(), nullable=True))
    op.create_table(
        'audit_log',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('actor', sa.String(length=254), nullable=False),
        sa.Column('action', sa.String(length=64), nullable=False),
        sa.Column('target', sa.String(length=255), nullable=False),
        sa.Column('outcome', sa.String(length=16), nullable=False),
        sa.Column('detail', sa.String(length=500), nullable=True),
        sa.Column('client_ip', sa.String(length=64), nullable=True),
        sa.CheckConstraint("outcome IN ('ok', 'failed', 'refused')", name=op.f('ck_audit_log_outcome')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log')),
    )
    op.create_index(op.f('ix_audit_log_occurred_at'), 'audit_log', ['occurred_at'], unique=False)
    op.create_index(op.f('ix_audit_log_actor'), 'audit_log', ['actor'], unique=False)


def downgrade():
    op.drop_index(op.f('ix_audit_log_actor'), table_name='audit_log')
    op.drop_index(op.f('ix_audit_log_occurred_at'), table_name='audit_log')
    op.drop_table('audit_log')
    with op.batch_alter_table('job_runs', schema=None) as batch_op:
        batch_op.drop_column('summary')
    with op.batch_alter_table('dashboard_users', schema=None) as batch_op:
        batch_op.drop_column('session_version')
        batch_op.drop_column('disabled_at')
