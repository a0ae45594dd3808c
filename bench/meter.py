"""The token meter on a long conversation: server time of ``POST /c/<id>/meter`` (asked as you type) and of
the page that shows it, for a 2,000-message conversation.

Builds the conversation in a fresh SQLite database (questions and answers of a few hundred characters, token
counts stored as the app stores them), then times with Flask's test client: the meter for a short and a long
draft (p50/p90), the same through the API, and ``GET /c/<id>``. Also counts the SQL statements of one meter
request. ``--uncounted`` leaves the stored token counts out (messages saved by old code), the slow path.
Goal: the meter ≤ 20 ms p50, so typing never waits on it (it is debounced by 250 ms in the browser).

    python bench/meter.py [--messages 2000] [--repeat 30] [--uncounted]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import event, insert

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chatapp import create_app  # noqa: E402
from chatapp.extensions import db  # noqa: E402
from chatapp.identity import SESSION_GENERATION, SESSION_USER  # noqa: E402
from chatapp.models import ApiToken, Conversation, Message, User  # noqa: E402
from chatapp.tokens import count_tokens  # noqa: E402

QUESTION = "Question {n}: how does step {n} work, and why does it matter for the next one? "
ANSWER = "Step {n} takes the input, checks it, and passes it on. " * 6


def build(messages: int, counted: bool) -> tuple:
    """An app on a fresh database; a logged-in page client, an API token, and the conversation's id."""
    workdir = Path(tempfile.mkdtemp(prefix="chatapp-meter-"))
    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "bench",
            "DATABASE_URL": f"sqlite:///{workdir / 'meter.sqlite3'}",
            "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",  # never answers: only pages and the meter are read
            "OPENAI_API_KEY": "x",
            "REDIS_URL": None,
            "UPLOAD_FOLDER": str(workdir / "uploads"),
        }
    )
    with app.app_context():
        user = User()
        db.session.add(user)
        db.session.flush()
        conversation = Conversation(user_id=user.id, title="A long one")
        db.session.add(conversation)
        db.session.flush()
        rows: list[dict] = []
        for n in range(messages // 2):
            for role, text in (("user", QUESTION.format(n=n)), ("assistant", ANSWER.format(n=n))):
                row = {"id": len(rows) + 1, "parent_id": len(rows) or None, "role": role, "content": text}
                rows.append(row | {"token_count": count_tokens(text) if counted else None})
        for row in rows:
            row |= {"conversation_id": conversation.id, "status": "complete", "model": "bench-model"}
        db.session.execute(insert(Message), rows)
        conversation.active_leaf_id = len(rows)
        token_row, token = ApiToken.issue(user.id, "bench")
        db.session.add(token_row)
        db.session.commit()
        ids = (user.id, user.session_generation, conversation.id)
        engine = db.engine
    client = app.test_client()
    with client.session_transaction() as session:
        session[SESSION_USER], session[SESSION_GENERATION] = ids[0], ids[1]
        session["csrf_token"] = "bench-csrf"
    return app, client, token, ids[2], engine


def timed(call, repeat: int) -> tuple[float, float, float]:  # noqa: ANN001
    """(first, p50, p90) in milliseconds."""
    times = []
    for _ in range(repeat + 1):
        start = time.perf_counter()
        response = call()
        times.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200, response.get_data(as_text=True)[:300]
    rest = sorted(times[1:])
    return times[0], statistics.median(rest), rest[int(len(rest) * 0.9) - 1]


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--uncounted", action="store_true", help="no stored token counts (messages from old code)")
    args = parser.parse_args()
    app, client, token, conversation_id, engine = build(args.messages, not args.uncounted)
    headers = {"X-CSRF-Token": "bench-csrf"}
    short, long_draft = "How many tokens is this?", "A longer draft, pasted in. " * 400
    api = {"Authorization": f"Bearer {token}"}

    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    client.post(f"/c/{conversation_id}/meter", data={"content": short}, headers=headers)
    count = len(statements)
    statements.clear()

    print(f"{args.messages} messages on the path, token counts {'not ' if args.uncounted else ''}stored")
    print(f"SQL statements per meter request: {count}")
    print("| request | first | p50 | p90 |")
    print("| --- | ---: | ---: | ---: |")
    cases = [
        (
            "meter, short draft",
            lambda: client.post(f"/c/{conversation_id}/meter", data={"content": short}, headers=headers),
        ),
        (
            "meter, 2,400-word draft",
            lambda: client.post(f"/c/{conversation_id}/meter", data={"content": long_draft}, headers=headers),
        ),
        (
            "API meter, short draft",
            lambda: client.post(f"/api/v1/conversations/{conversation_id}/meter", json={"content": short}, headers=api),
        ),
        ("page GET /c/<id>", lambda: client.get(f"/c/{conversation_id}")),
    ]
    for name, call in cases:
        first, p50, p90 = timed(call, args.repeat)
        print(f"| {name} | {first:.1f} ms | {p50:.1f} ms | {p90:.1f} ms |")


if __name__ == "__main__":
    main()
