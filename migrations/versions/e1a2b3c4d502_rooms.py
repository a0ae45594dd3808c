"""rooms: members with roles, an invite link per conversation, the author of each user message

Revision ID: e1a2b3c4d502
Revises: e1a2b3c4d506
Create Date: 2026-11-24 06:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'e1a2b3c4d502'
down_revision = 'e1a2b3c4d506'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'room_member',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('conversation_id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.String(length=32), nullable=False),
        sa.Column('role', sa.String(length=8), nullable=False),
        sa.Column('joined_at', sa.DateTime(), nullable=False),
        sa.Column('last_seen_at', sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(['conversation_id'], ['conversation.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['user_id'], ['user.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('conversation_id', 'user_id', name='uq_room_member'),
    )
    op.create_index('ix_room_member_conversation_id', 'room_member', ['conversation_id'])
    op.create_index('ix_room_member_user_id', 'room_member', ['user_id'])
    # Additive and nullable (plain ALTER TABLE, no batch copy): code without them keeps running.
    op.add_column('conversation', sa.Column('invite_token', sa.String(length=64), nullable=True))
    op.add_column('conversation', sa.Column('invite_role', sa.String(length=8), nullable=False, server_default='member'))
    op.create_index('ix_conversation_invite_token', 'conversation', ['invite_token'], unique=True)
    if op.get_bind().dialect.name == 'sqlite':
        # SQLite adds a column with its reference in one ALTER TABLE (alembic would want a batch table copy).
        op.execute('ALTER TABLE message ADD COLUMN author_id VARCHAR(32) REFERENCES "user" (id) ON DELETE SET NULL')
    else:
        op.add_column(
            'message',
            sa.Column('author_id', sa.String(length=32), sa.ForeignKey('user.id', ondelete='SET NULL'), nullable=True),
        )
    # Every user message so far was sent by its conversation's owner.
    op.execute(
        "UPDATE message SET author_id = (SELECT conversation.user_id FROM conversation"
        " WHERE conversation.id = message.conversation_id) WHERE role = 'user'"
    )


def downgrade():
    op.drop_column('message', 'author_id')
    op.drop_index('ix_conversation_invite_token', table_name='conversation')
    op.drop_column('conversation', 'invite_role')
    op.drop_column('conversation', 'invite_token')
    op.drop_index('ix_room_member_user_id', table_name='room_member')
    op.drop_index('ix_room_member_conversation_id', table_name='room_member')
    op.drop_table('room_member')
