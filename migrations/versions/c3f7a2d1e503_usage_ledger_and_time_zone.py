"""usage ledger and the identity's time zone

Revision ID: c3f7a2d1e503
Revises: a1d9e7c2b301
Create Date: 2026-11-24 09:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'c3f7a2d1e503'
down_revision = 'a1d9e7c2b301'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'usage',
        sa.Column('user_id', sa.String(length=32), nullable=False),
        sa.Column('day', sa.Date(), nullable=False),
        sa.Column('answers', sa.Integer(), server_default='0', nullable=False),
        sa.Column('tokens', sa.Integer(), server_default='0', nullable=False),
        sa.ForeignKeyConstraint(['user_id'], ['user.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('user_id', 'day'),
    )
    with op.batch_alter_table('user', schema=None) as batch_op:
        batch_op.add_column(sa.Column('time_zone', sa.String(length=64), server_default='UTC', nullable=False))


def downgrade():
    with op.batch_alter_table('user', schema=None) as batch_op:
        batch_op.drop_column('time_zone')
    op.drop_table('usage')
