"""image bytes in the database (IMAGE_STORAGE=database)

Revision ID: a1d9e7c2b301
Revises: cbbcba93c6d2
Create Date: 2026-11-24 03:30:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'a1d9e7c2b301'
down_revision = 'cbbcba93c6d2'
branch_labels = None
depends_on = None


def upgrade():
    # Additive only: the previous release's code runs on this schema during a deploy.
    op.create_table('image_data',
    sa.Column('image_id', sa.Integer(), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['image_id'], ['image.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('image_id')
    )


def downgrade():
    op.drop_table('image_data')
