"""accounts: usernames, passwords, admins, single sign-on; invites and reset links

Revision ID: b2c8f1e4a902
Revises: c3f7a2d1e503
Create Date: 2026-11-24 09:00:00.000000

Additive only: new nullable columns (or with server defaults) and new tables, so the previous
release's code runs on this schema during a deploy. Columns are added with plain ALTER TABLE and
uniqueness comes from unique indexes: on SQLite a batch "copy and move" of the user table would
drop it, and with foreign keys on, dropping it cascades to every conversation.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'b2c8f1e4a902'
down_revision = 'c3f7a2d1e503'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column('user', sa.Column('username', sa.String(length=64), nullable=True))
    op.add_column('user', sa.Column('password_hash', sa.String(length=255), nullable=True))
    op.add_column('user', sa.Column('display_name', sa.String(length=100), nullable=True))
    # time_zone comes with the usage ledger's migration (c3f7a2d1e503).
    op.add_column('user', sa.Column('is_admin', sa.Boolean(), server_default=sa.false(), nullable=False))
    op.add_column('user', sa.Column('disabled_at', sa.DateTime(), nullable=True))
    op.add_column('user', sa.Column('session_generation', sa.Integer(), server_default='0', nullable=False))
    op.add_column('user', sa.Column('oidc_subject', sa.String(length=255), nullable=True))
    op.add_column('user', sa.Column('last_seen_at', sa.DateTime(), nullable=True))
    op.create_index('ix_user_username', 'user', ['username'], unique=True)
    op.create_index('ix_user_oidc_subject', 'user', ['oidc_subject'], unique=True)
    op.create_index('ix_user_last_seen_at', 'user', ['last_seen_at'], unique=False)

    op.create_table('invite',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('created_by', sa.String(length=32), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.Column('used_at', sa.DateTime(), nullable=True),
    sa.Column('used_by', sa.String(length=32), nullable=True),
    sa.ForeignKeyConstraint(['created_by'], ['user.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['used_by'], ['user.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('token_hash')
    )
    op.create_table('reset_link',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.String(length=32), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.Column('used_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['user.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('token_hash')
    )
    op.create_index('ix_reset_link_user_id', 'reset_link', ['user_id'], unique=False)


def downgrade():
    op.drop_index('ix_reset_link_user_id', table_name='reset_link')
    op.drop_table('reset_link')
    op.drop_table('invite')
    op.drop_index('ix_user_last_seen_at', table_name='user')
    op.drop_index('ix_user_oidc_subject', table_name='user')
    op.drop_index('ix_user_username', table_name='user')
    for column in ('last_seen_at', 'oidc_subject', 'session_generation', 'disabled_at', 'is_admin',
                   'display_name', 'password_hash', 'username'):
        op.drop_column('user', column)  # ALTER TABLE … DROP COLUMN (SQLite 3.35+), no table copy
