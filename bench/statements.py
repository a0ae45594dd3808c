"""What the statements every send asks cost, one call at a time (in-process, SQLite).

A send authenticates (API), checks that no answer is streaming, indexes its message for search and
asks whether the conversation is a room; its stream's opening authenticates again. Each line is the
median over 7 rounds of 2,000 calls of the chatapp function that asks it, statement built and run.

    .venv/bin/python bench/statements.py
"""

from __future__ import annotations

import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chatapp import create_app, rooms, search  # noqa: E402
from chatapp.extensions import db  # noqa: E402
from chatapp.models import ApiToken, Conversation, Message  # noqa: E402


def per_call(function: Callable[[], object], calls: int = 2000, rounds: int = 7) -> float:
    """Median microseconds per call over ``rounds`` rounds of ``calls`` calls."""
    timings = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(calls):
            function()
        timings.append((time.perf_counter() - started) / calls * 1e6)
    return statistics.median(timings)


def main() -> None:
    folder = tempfile.mkdtemp(prefix="chatapp-statements-")
    app = create_app(
        {
            "SECRET_KEY": "bench",
            "DATABASE_URL": f"sqlite:///{folder}/bench.sqlite3",
            "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",  # never asked: no answer is started
            "OPENAI_API_KEY": "x",
            "REDIS_URL": None,
            "UPLOAD_FOLDER": folder,
        }
    )
    logging.disable(logging.INFO)  # one request log line per setup request is not the point
    client = app.test_client()
    token = client.post("/api/v1/auth/guest").get_json()["token"]
    made = client.post("/api/v1/conversations", json={}, headers={"Authorization": f"Bearer {token}"})
    with app.app_context():
        conversation = db.session.get(Conversation, made.get_json()["id"])
        assert conversation is not None
        message = Message(
            conversation_id=conversation.id, role="user", content="hello there", author_id=conversation.user_id
        )
        db.session.add(message)
        db.session.commit()
        rows = {
            "ApiToken.owner (each API request)": lambda: ApiToken.owner(token),
            "Conversation.streaming_message (each send)": conversation.streaming_message,
            "rooms.is_room (each send)": lambda: rooms.is_room(conversation),
            "search.index_message (each send, each answer's end)": lambda: search.index_message(message),
        }
        print("| statement (asked by) | µs per call |\n| --- | ---: |")
        for name, function in rows.items():
            print(f"| {name} | {per_call(function):.0f} |")
        db.session.rollback()


if __name__ == "__main__":
    main()
