"""import jobs, and where imported conversations came from

Revision ID: e1a2b3c4d505
Revises: e1a2b3c4d504
Create Date: 2026-11-24 06:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'e1a2b3c4d505'
down_revision = 'e1a2b3c4d504'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'import_job',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.String(length=32), nullable=False),
        sa.Column('filename', sa.String(length=255), nullable=False),
        sa.Column('size', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('imported', sa.Integer(), server_default='0', nullable=False),
        sa.Column('skipped', sa.Integer(), server_default='0', nullable=False),
        sa.Column('bytes_read', sa.Integer(), server_default='0', nullable=False),
        sa.Column('report', sa.Text(), nullable=False),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.Column('finished_at', sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(['user_id'], ['user.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_import_job_user_id', 'import_job', ['user_id'])
    op.create_table(
        'conversation_source',
        sa.Column('conversation_id', sa.Integer(), nullable=False),
        sa.Column('source', sa.String(length=16), nullable=False),
        sa.Column('source_id', sa.String(length=255), nullable=True),
        sa.Column('source_hash', sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(['conversation_id'], ['conversation.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('conversation_id'),
    )
    op.create_index('ix_conversation_source_source_hash', 'conversation_source', ['source_hash'])


def downgrade():
    op.drop_index('ix_conversation_source_source_hash', table_name='conversation_source')
    op.drop_table('conversation_source')
    op.drop_index('ix_import_job_user_id', table_name='import_job')
    op.drop_table('import_job')
