"""version_checks and job_runs: version history, single-run guard

Revision ID: 0004_versioning
Revises: 0003_payments
Create Date: 2026-11-22 04:20:09.339356

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0004_versioning'
down_revision = '0003_payments'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('job_runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('job', sa.String(length=64), nullable=False),
    sa.Column('period', sa.String(length=32), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_job_runs')),
    sa.UniqueConstraint('job', 'period', name=op.f('uq_job_runs_job'))
    )
    op.create_table('version_checks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('checked_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('source', sa.String(length=32), nullable=False),
    sa.Column('configured_version', sa.String(length=128), nullable=False),
    sa.Column('library_version', sa.String(length=64), nullable=False),
    sa.Column('version_date', sa.Date(), nullable=True),
    sa.Column('age_days', sa.Integer(), nullable=True),
    sa.Column('age_status', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('remote', sa.Boolean(), nullable=False),
    sa.Column('mismatches', sa.JSON(), nullable=False),
    sa.Column('observed', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_version_checks'))
    )
    with op.batch_alter_table('version_checks', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_version_checks_checked_at'), ['checked_at'], unique=False)


def downgrade():
    with op.batch_alter_table('version_checks', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_version_checks_checked_at'))

    op.drop_table('version_checks')
    op.drop_table('job_runs')
