"""a stored theme per identity, and alt text for attached images

Revision ID: d4e6b3c2f704
Revises: cbbcba93c6d2
Create Date: 2026-11-24 09:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'd4e6b3c2f704'
down_revision = 'cbbcba93c6d2'
branch_labels = None
depends_on = None


def upgrade():
    # Additive and nullable: code without these columns keeps running during a deploy.
    with op.batch_alter_table('user', schema=None) as batch_op:
        batch_op.add_column(sa.Column('theme', sa.String(length=8), nullable=True))
    with op.batch_alter_table('image', schema=None) as batch_op:
        batch_op.add_column(sa.Column('alt', sa.String(length=300), nullable=True))


def downgrade():
    with op.batch_alter_table('image', schema=None) as batch_op:
        batch_op.drop_column('alt')
    with op.batch_alter_table('user', schema=None) as batch_op:
        batch_op.drop_column('theme')
