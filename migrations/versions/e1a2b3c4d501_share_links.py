"""read-only share links for conversations

Revision ID: e1a2b3c4d501
Revises: e1a2b3c4d507
Create Date: 2026-11-24 06:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'e1a2b3c4d501'
down_revision = 'e1a2b3c4d507'
branch_labels = None
depends_on = None


def upgrade():
    # A new table only: code without it keeps running during a deploy.
    op.create_table(
        'share_link',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('token', sa.String(length=64), nullable=False),
        sa.Column('conversation_id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('visibility', sa.String(length=16), nullable=False),
        sa.Column('allow_indexing', sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('expires_at', sa.DateTime(), nullable=True),
        sa.Column('revoked_at', sa.DateTime(), nullable=True),
        sa.Column('last_message_id', sa.Integer(), nullable=True),
        sa.Column('leaf_id', sa.Integer(), nullable=True),
        sa.Column('frozen', sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(['conversation_id'], ['conversation.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('token'),
    )
    op.create_index(op.f('ix_share_link_conversation_id'), 'share_link', ['conversation_id'], unique=False)


def downgrade():
    op.drop_index(op.f('ix_share_link_conversation_id'), table_name='share_link')
    op.drop_table('share_link')
