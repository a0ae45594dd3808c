"""full-text search index; folders, pinned, archived and temporary conversations

Revision ID: e1a2b3c4d504
Revises: e1a2b3c4d508
Create Date: 2026-11-24 06:00:00.000000

"""
import re
import unicodedata

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'e1a2b3c4d504'
down_revision = 'e1a2b3c4d508'
branch_labels = None
depends_on = None

BATCH = 2000
_SEPARATORS = re.compile(r"[\W_]+")


def _normalise(text):
    """A frozen copy of chatapp.search.normalise (a migration must not change with the code)."""
    decomposed = unicodedata.normalize("NFKD", text or "")
    folded = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    return " ".join(_SEPARATORS.sub(" ", folded).split())


def upgrade():
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    op.create_table(
        'folder',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.String(length=32), nullable=False),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('system_prompt', sa.Text(), nullable=True),
        sa.Column('model', sa.String(length=200), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['user_id'], ['user.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_folder_user_id', 'folder', ['user_id'])
    # Additive and nullable (or defaulted): code without these columns keeps running during a deploy.
    op.add_column('conversation', sa.Column('pinned_at', sa.DateTime(), nullable=True))
    op.add_column('conversation', sa.Column('archived_at', sa.DateTime(), nullable=True))
    op.add_column(
        'conversation', sa.Column('temporary', sa.Boolean(), nullable=False, server_default=sa.false())
    )
    op.add_column('conversation', sa.Column('folder_id', sa.Integer(), nullable=True))
    if not sqlite:  # SQLite cannot add a constraint to a table (nor drop a referencing column): the core
        # moves a folder's chats out before deleting it, on both databases.
        op.create_foreign_key(
            'fk_conversation_folder_id', 'conversation', 'folder', ['folder_id'], ['id'], ondelete='SET NULL'
        )
    op.create_index('ix_conversation_folder_id', 'conversation', ['folder_id'])

    # The search index: one row per message (and one per conversation title), its text accent-folded,
    # lower-cased and cut into words in Python, so both databases see the very same words.
    op.create_table(
        'search_entry',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('conversation_id', sa.Integer(), nullable=False),
        sa.Column('message_id', sa.Integer(), nullable=True),
        sa.Column('role', sa.String(length=16), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('body', sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(['conversation_id'], ['conversation.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['message_id'], ['message.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_search_entry_conversation_id', 'search_entry', ['conversation_id'])
    op.create_index('ix_search_entry_message_id', 'search_entry', ['message_id'], unique=True)
    op.create_index('ix_search_entry_created_at', 'search_entry', ['created_at'])
    if sqlite:
        # FTS5 over search_entry.body (external content, kept in step by triggers, also on cascades).
        op.execute(
            "CREATE VIRTUAL TABLE search_fts USING fts5(body, content='search_entry', content_rowid='id', "
            "tokenize='unicode61 remove_diacritics 0', prefix='2 3')"  # prefix indexes: quick as-you-type
        )
        op.execute(
            "CREATE TRIGGER search_entry_ai AFTER INSERT ON search_entry BEGIN "
            "INSERT INTO search_fts(rowid, body) VALUES (new.id, new.body); END"
        )
        op.execute(
            "CREATE TRIGGER search_entry_ad AFTER DELETE ON search_entry BEGIN "
            "INSERT INTO search_fts(search_fts, rowid, body) VALUES ('delete', old.id, old.body); END"
        )
        op.execute(
            "CREATE TRIGGER search_entry_au AFTER UPDATE OF body ON search_entry BEGIN "
            "INSERT INTO search_fts(search_fts, rowid, body) VALUES ('delete', old.id, old.body); "
            "INSERT INTO search_fts(rowid, body) VALUES (new.id, new.body); END"
        )
    else:
        op.execute(
            "ALTER TABLE search_entry ADD COLUMN words tsvector "
            "GENERATED ALWAYS AS (to_tsvector('simple', body)) STORED"
        )
        op.execute("CREATE INDEX ix_search_entry_words ON search_entry USING gin (words)")
    _backfill(bind)


def _backfill(bind):
    """Index every finished message and every title of the conversations there are."""
    entry = sa.table(
        'search_entry',
        sa.column('conversation_id', sa.Integer),
        sa.column('message_id', sa.Integer),
        sa.column('role', sa.String),
        sa.column('created_at', sa.DateTime),
        sa.column('body', sa.Text),
    )
    conversation = sa.table(
        'conversation', sa.column('id', sa.Integer), sa.column('title', sa.String), sa.column('created_at', sa.DateTime)
    )
    message = sa.table(
        'message',
        sa.column('id', sa.Integer),
        sa.column('conversation_id', sa.Integer),
        sa.column('role', sa.String),
        sa.column('created_at', sa.DateTime),
        sa.column('content', sa.Text),
        sa.column('status', sa.String),
    )
    # In time order, titles among the messages: entry ids give "newest first" its order.
    titles = sorted(
        bind.execute(sa.select(conversation.c.id, conversation.c.title, conversation.c.created_at)).all(),
        key=lambda row: (row[2], row[0]),
    )
    pending = 0
    last = 0
    while True:
        batch = bind.execute(
            sa.select(message.c.id, message.c.conversation_id, message.c.role, message.c.created_at, message.c.content)
            .where(message.c.id > last, message.c.status != 'streaming')
            .order_by(message.c.id)
            .limit(BATCH)
        ).all()
        rows = []
        for mid, cid, role, created, text in batch:
            while pending < len(titles) and titles[pending][2] <= created:
                rows.append(_title_row(titles[pending]))
                pending += 1
            if _normalise(text):
                rows.append(
                    {"conversation_id": cid, "message_id": mid, "role": role, "created_at": created, "body": _normalise(text)}
                )
        if not batch:
            rows = [_title_row(row) for row in titles[pending:]]
        rows = [row for row in rows if row["body"]]
        if rows:
            bind.execute(entry.insert(), rows)
        if not batch:
            break
        last = batch[-1][0]


def _title_row(row):
    cid, title, created = row
    return {"conversation_id": cid, "message_id": None, "role": "title", "created_at": created, "body": _normalise(title)}


def downgrade():
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for trigger in ("search_entry_ai", "search_entry_ad", "search_entry_au"):
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        op.execute("DROP TABLE IF EXISTS search_fts")
    op.drop_table('search_entry')
    op.drop_index('ix_conversation_folder_id', table_name='conversation')
    if bind.dialect.name != "sqlite":
        op.drop_constraint('fk_conversation_folder_id', 'conversation', type_='foreignkey')
    op.drop_column('conversation', 'folder_id')
    op.drop_column('conversation', 'temporary')
    op.drop_column('conversation', 'archived_at')
    op.drop_column('conversation', 'pinned_at')
    op.drop_table('folder')
