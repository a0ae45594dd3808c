"""notes beside a conversation (the assistant's save_note tool, or the user's own)

Revision ID: e1a2b3c4d508
Revises: e1a2b3c4d502
Create Date: 2026-11-24 06:30:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'e1a2b3c4d508'
down_revision = 'e1a2b3c4d502'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'note',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('conversation_id', sa.Integer(), nullable=False),
        sa.Column('message_id', sa.Integer(), nullable=True),
        sa.Column('content', sa.Text(), nullable=False),
        sa.Column('source', sa.String(length=16), nullable=False),
        sa.Column('tool_call_id', sa.String(length=200), nullable=True),
        sa.Column('answer_offset', sa.Integer(), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['conversation_id'], ['conversation.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['message_id'], ['message.id'], ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_note_conversation_id', 'note', ['conversation_id'])
    op.create_index('ix_note_message_id', 'note', ['message_id'])


def downgrade():
    op.drop_index('ix_note_message_id', table_name='note')
    op.drop_index('ix_note_conversation_id', table_name='note')
    op.drop_table('note')
