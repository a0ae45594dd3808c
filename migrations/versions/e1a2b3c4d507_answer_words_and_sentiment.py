"""each answer's length in words and its sentiment score

Revision ID: e1a2b3c4d507
Revises: d4e6b3c2f704
Create Date: 2026-11-24 06:10:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'e1a2b3c4d507'
down_revision = 'd4e6b3c2f704'
branch_labels = None
depends_on = None


def upgrade():
    # Additive and nullable: answers written before keep NULL (the stats count them as unknown).
    op.add_column('message', sa.Column('word_count', sa.Integer(), nullable=True))
    op.add_column('message', sa.Column('sentiment', sa.Float(), nullable=True))


def downgrade():
    op.drop_column('message', 'sentiment')
    op.drop_column('message', 'word_count')
