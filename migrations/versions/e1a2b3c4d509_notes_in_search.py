"""notes in the full-text search index

Revision ID: e1a2b3c4d509
Revises: e1a2b3c4d505
Create Date: 2026-11-24 09:00:00.000000

"""
import re
import unicodedata

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'e1a2b3c4d509'
down_revision = 'e1a2b3c4d505'
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
    # Plain SQL on both databases: SQLite can add a column with its REFERENCES clause (not a constraint
    # afterwards), and a rebuilt table would lose the full-text triggers. Nullable: older code keeps running.
    op.execute("ALTER TABLE search_entry ADD COLUMN note_id INTEGER REFERENCES note (id) ON DELETE CASCADE")
    op.create_index('ix_search_entry_note_id', 'search_entry', ['note_id'], unique=True)
    _backfill(op.get_bind())


def _backfill(bind):
    """Index the notes there are (not those of temporary chats); they come after every entry so far, so
    "newest first" lists them before the messages written before this migration."""
    entry = sa.table(
        'search_entry',
        sa.column('conversation_id', sa.Integer),
        sa.column('note_id', sa.Integer),
        sa.column('role', sa.String),
        sa.column('created_at', sa.DateTime),
        sa.column('body', sa.Text),
    )
    note = sa.table(
        'note',
        sa.column('id', sa.Integer),
        sa.column('conversation_id', sa.Integer),
        sa.column('content', sa.Text),
        sa.column('created_at', sa.DateTime),
    )
    conversation = sa.table('conversation', sa.column('id', sa.Integer), sa.column('temporary', sa.Boolean))
    last = 0
    while True:
        batch = bind.execute(
            sa.select(note.c.id, note.c.conversation_id, note.c.content, note.c.created_at)
            .join(conversation, conversation.c.id == note.c.conversation_id)
            .where(note.c.id > last, conversation.c.temporary == sa.false())
            .order_by(note.c.id)
            .limit(BATCH)
        ).all()
        if not batch:
            break
        rows = [
            {"conversation_id": cid, "note_id": nid, "role": "note", "created_at": created, "body": _normalise(text)}
            for nid, cid, text, created in batch
        ]
        rows = [row for row in rows if row["body"]]
        if rows:
            bind.execute(entry.insert(), rows)
        last = batch[-1][0]


def downgrade():
    op.execute("DELETE FROM search_entry WHERE note_id IS NOT NULL")  # the SQLite triggers update search_fts
    op.drop_index('ix_search_entry_note_id', table_name='search_entry')
    op.execute("ALTER TABLE search_entry DROP COLUMN note_id")
