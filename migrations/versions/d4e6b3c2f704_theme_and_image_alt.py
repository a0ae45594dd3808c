"""a stored theme per identity, and alt text for attached images

Revision ID: d4e6b3c2f704
Revises: b2c8f1e4a902
Create Date: 2026-11-24 09:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'd4e6b3c2f704'
down_revision = 'b2c8f1e4a902'
branch_labels = None
depends_on = None


def upgrade():
    # Additive and nullable: code without these columns keeps running during a deploy.
    # Plain ALTER TABLE (no batch table copy: on SQLite, recreating "user" would cascade-delete its rows).
    op.add_column('user', sa.Column('theme', sa.String(length=8), nullable=True))
    op.add_column('image', sa.Column('alt', sa.String(length=300), nullable=True))


def downgrade():
    op.drop_column('image', 'alt')  # ALTER TABLE … DROP COLUMN (SQLite 3.35+), no table copy
    op.drop_column('user', 'theme')
