"""Long conversation page: server time and HTML size of /c/<id> for a 2,000-message conversation.

Builds the conversation in a fresh SQLite database (answers of about 700 characters of Markdown, a
code block in every fifth, a side branch every tenth exchange), then times the page with Flask's test
client: the first request (Markdown not yet cached), the p50/p90 of the next ones, and a page of
messages not rendered before (?around=, which older code ignores). Also counts the
SQL statements and the message rows loaded per page. Goal: <= 50 ms and <= 200 KB.

    python bench/long_conversation.py [--messages 2000] [--repeat 30]

Works on older code too (which shows every message), to compare.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import event, insert, select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chatapp import create_app  # noqa: E402
from chatapp.extensions import db  # noqa: E402
from chatapp.models import Conversation, Message, User  # noqa: E402

ANSWER = """Here is how it works, step {n}.

- The first point, with **bold** and `inline code`.
- The second point, with a [link](https://example.com/{n}).

{code}A closing paragraph that explains the rest of answer {n} in a sentence or two, long enough to
read like the answers a model writes; then it stops.
"""
CODE = "```python\ndef step_{n}(x: int) -> int:\n    return x * {n}\n```\n\n"


def build(messages: int) -> tuple:
    """An app on a fresh database, a client whose identity owns a conversation of ``messages``."""
    workdir = Path(tempfile.mkdtemp(prefix="chatapp-long-"))
    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "bench",
            "DATABASE_URL": f"sqlite:///{workdir / 'long.sqlite3'}",
            "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",  # never called: only pages are read
            "OPENAI_API_KEY": "x",
            "REDIS_URL": None,
            "UPLOAD_FOLDER": str(workdir / "uploads"),
        }
    )
    client = app.test_client()
    client.get("/")  # a guest identity
    with app.app_context():
        user_id = db.session.scalar(select(User.id))
        conversation = Conversation(user_id=user_id, title="A long one")
        db.session.add(conversation)
        db.session.flush()
        rows: list[dict] = []
        parent = None
        for n in range(messages // 2):
            question = {"id": len(rows) + 1, "parent_id": parent, "role": "user"}
            rows.append(question | {"content": f"Question {n}: how does step {n} work, and why? " * 2})
            if n % 10 == 0:  # another version of this question, not on the visible path
                rows.append({"id": len(rows) + 1, "parent_id": parent, "role": "user", "content": f"Q{n}, again"})
            code = CODE.format(n=n) if n % 5 == 0 else ""
            rows.append({"id": len(rows) + 1, "parent_id": question["id"], "role": "assistant"})
            rows[-1]["content"] = ANSWER.format(n=n, code=code)
            parent = rows[-1]["id"]
        for row in rows:
            row |= {"conversation_id": conversation.id, "status": "complete", "model": "bench-model"}
        db.session.execute(insert(Message), rows)
        conversation.active_leaf_id = parent
        db.session.commit()
        conversation_id, engine = conversation.id, db.engine
    middle = [row["id"] for row in rows if row["role"] == "assistant"][len(rows) // 6]
    return app, client, conversation_id, engine, middle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    app, client, conversation_id, engine, middle = build(args.messages)
    url = f"/c/{conversation_id}"

    counts = {"statements": 0, "rows": 0}
    event.listen(engine, "before_cursor_execute", lambda *a: counts.__setitem__("statements", counts["statements"] + 1))
    event.listen(Message, "load", lambda *a: counts.__setitem__("rows", counts["rows"] + 1))

    def timed(path: str = url) -> tuple[float, str]:
        started = time.perf_counter()
        response = client.get(path)
        took = (time.perf_counter() - started) * 1000
        assert response.status_code == 200, response.status_code
        return took, response.get_data(as_text=True)

    first, page = timed()
    size = len(page.encode())
    first_counts = dict(counts)
    times = sorted(timed()[0] for _ in range(args.repeat))
    other, _ = timed(f"/c/{conversation_id}?around={middle}")  # 50 others, Markdown not cached yet
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"$ python bench/long_conversation.py --messages {args.messages} --repeat {args.repeat}")
    print(f"load average (1, 5, 15 min): {load}")
    print(f"{args.messages} messages on the path; GET {url}:")
    print(f"  HTML {size / 1024:.0f} KB, {page.count('<article')} messages shown")
    print(
        f"  first request {first:.1f} ms (Markdown not cached yet); next {args.repeat}:"
        f" p50 {statistics.median(times):.1f} ms, p90 {times[int(0.9 * (len(times) - 1))]:.1f} ms"
    )
    print(f"  another part of it (?around=, Markdown not cached, templates warm): {other:.1f} ms")
    print(f"  per page: {first_counts['statements']} SQL statements, {first_counts['rows']} message rows loaded")
    ok = statistics.median(times) <= 50 and size <= 200 * 1024
    print(f"goal <= 50 ms and <= 200 KB: {'PASS' if ok else 'FAIL'}")


if __name__ == "__main__":
    main()
