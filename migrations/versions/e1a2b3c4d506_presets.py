"""presets: a user's named conversation settings and opening prompt

Revision ID: e1a2b3c4d506
Revises: e1a2b3c4d501
Create Date: 2026-11-24 06:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'e1a2b3c4d506'
down_revision = 'e1a2b3c4d501'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'preset',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.String(length=32), nullable=False),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('model', sa.String(length=200), nullable=True),
        sa.Column('system_prompt', sa.Text(), nullable=True),
        sa.Column('temperature', sa.Float(), nullable=True),
        sa.Column('max_tokens', sa.Integer(), nullable=True),
        sa.Column('opening_prompt', sa.Text(), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['user_id'], ['user.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index(op.f('ix_preset_user_id'), 'preset', ['user_id'], unique=False)


def downgrade():
    op.drop_index(op.f('ix_preset_user_id'), table_name='preset')
    op.drop_table('preset')
