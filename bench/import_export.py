"""Import and export at size: memory stays small, and other work keeps running meanwhile.

Writes a ChatGPT-style ``conversations.json`` (N conversations of M messages, every fifth question
edited once, so there are branches), imports it with chatapp's importer in this process, under gevent
as in production (``--no-gevent``: plain threads), and prints the file size, the time, conversations
and messages per second, how much the process's peak memory (RSS) grew, and the longest pause seen by
a ticker that wakes every 5 ms (the "do streams stall" figure). Then it exports every conversation as
a streamed zip and prints the same.

    .venv/bin/python bench/import_export.py --conversations 500 --messages 40
    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/bench .venv/bin/python bench/import_export.py
"""

from __future__ import annotations

import argparse
import sys

if "--no-gevent" not in sys.argv:
    from gevent import monkey

    monkey.patch_all()

import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chatapp import create_app, export, importing  # noqa: E402
from chatapp.blocking import Breather  # noqa: E402
from chatapp.extensions import db  # noqa: E402
from chatapp.models import ImportJob, User  # noqa: E402

WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "seven",
    "wizards",
    "quietly",
    "judge",
    "boxing",
    "matches",
]


def sentence(n: int, length: int) -> str:
    return " ".join(WORDS[(n * 7 + i) % len(WORDS)] for i in range(length))


def node(key: str, parent: str | None, children: list[str], role: str, text: str, when: float) -> dict:
    return {
        "id": key,
        "parent": parent,
        "children": children,
        "message": {
            "id": key,
            "author": {"role": role, "name": None, "metadata": {}},
            "create_time": when,
            "update_time": None,
            "content": {"content_type": "text", "parts": [text]},
            "status": "finished_successfully",
            "metadata": {"model_slug": "gpt-4o"} if role == "assistant" else {},
            "recipient": "all",
        },
    }


def conversation(number: int, messages: int) -> dict:
    """A linear conversation of ``messages`` messages, with an edited question every fifth exchange."""
    mapping: dict[str, dict] = {"root": {"id": "root", "message": None, "parent": None, "children": []}}
    parent, when = "root", 1_700_000_000.0 + number * 1000
    for i in range(messages):
        role = "user" if i % 2 == 0 else "assistant"
        key = f"c{number}-m{i}"
        mapping[key] = node(key, parent, [], role, sentence(number + i, 60 if role == "assistant" else 15), when + i)
        mapping[parent]["children"].append(key)
        if role == "user" and i % 10 == 0:  # an earlier version of this question, with its own answer
            old, answer = f"{key}-old", f"{key}-old-a"
            mapping[old] = node(old, parent, [answer], "user", "an earlier version", when + i)
            mapping[answer] = node(answer, old, [], "assistant", sentence(i, 40), when + i)
            mapping[parent]["children"].insert(-1, old)
        parent = key
    return {
        "title": f"Conversation {number}",
        "create_time": when,
        "update_time": when + messages,
        "mapping": mapping,
        "current_node": parent,
        "conversation_id": f"bench-{number}",
    }


def write_file(path: str, conversations: int, messages: int) -> int:
    """Write the file a conversation at a time (the generator holds one in memory); its size."""
    with open(path, "w") as out:
        out.write("[")
        for n in range(conversations):
            out.write(("," if n else "") + json.dumps(conversation(n, messages)))
        out.write("]")
    return os.path.getsize(path)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Ticker:
    """Wakes every 5 ms and records the longest time between two wake-ups."""

    def __init__(self) -> None:
        self.longest = 0.0
        self.running = True
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        last = time.perf_counter()
        while self.running:
            time.sleep(0.005)
            now = time.perf_counter()
            self.longest = max(self.longest, now - last - 0.005)
            last = now

    def stop(self) -> float:
        self.running = False
        self.thread.join()
        return self.longest * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=500)
    parser.add_argument("--messages", type=int, default=40)
    parser.add_argument("--no-gevent", action="store_true")
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="chatapp-bench-import-")
    url = os.environ.get("DATABASE_URL") or f"sqlite:///{folder}/bench.sqlite3"
    config = {"TESTING": True, "SECRET_KEY": "bench", "DATABASE_URL": url, "OPENAI_API_KEY": "x"}
    config |= {"OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "UPLOAD_FOLDER": f"{folder}/uploads"}
    app = create_app(config)
    source = f"{folder}/conversations.json"
    size = write_file(source, args.conversations, args.messages)
    with app.app_context():
        user = User()
        db.session.add(user)
        db.session.flush()
        job = ImportJob(user_id=user.id, filename="conversations.json", size=size, kind="chatgpt")
        db.session.add(job)
        db.session.commit()
        user_id, job_id = user.id, job.id
    path = f"{folder}/upload"
    shutil.copy(source, path)
    print(f"file: {size / 1e6:.1f} MB, {args.conversations} conversations of {args.messages} messages (+ branches)")
    print(f"workers: {'plain threads' if args.no_gevent else 'gevent'}; database: {url.split(':', 1)[0]}")

    ticker = Ticker()
    time.sleep(2)
    print(f"idle: longest pause {ticker.stop():.1f} ms over 2 s with nothing else running (the machine's own noise)")
    ticker, breathe, until = Ticker(), Breather(), time.monotonic() + 5
    while time.monotonic() < until:  # the control: busy work that pauses every 10 ms, as the import does
        sum(range(2000))
        breathe()
    print(f"control: longest pause {ticker.stop():.1f} ms over 5 s of busy work that pauses every 10 ms")

    before, ticker, started = peak_rss_mb(), Ticker(), time.perf_counter()
    worker = threading.Thread(target=importing.run, args=(app, job_id, path))
    worker.start()
    worker.join()
    elapsed, pause = time.perf_counter() - started, ticker.stop()
    with app.app_context():
        job = db.session.get(ImportJob, job_id)
        assert job is not None and job.status == "done", (job.status, job.error) if job else None
        messages = db.session.scalar(db.text("select count(*) from message"))
        print(
            f"import: {elapsed:.1f} s, {job.imported / elapsed:.0f} conversations/s, "
            f"{messages / elapsed:.0f} messages/s; "
            f"peak RSS +{peak_rss_mb() - before:.1f} MB (at {peak_rss_mb():.0f} MB); longest pause {pause:.1f} ms"
        )

    with app.app_context():
        ids = export.conversation_ids(user_id)
        before, ticker, started, total = peak_rss_mb(), Ticker(), time.perf_counter(), 0
        for chunk in export.zip_chunks(ids):
            total += len(chunk)
        elapsed, pause = time.perf_counter() - started, ticker.stop()
        print(
            f"export zip: {total / 1e6:.1f} MB in {elapsed:.1f} s; peak RSS +{peak_rss_mb() - before:.1f} MB "
            f"(at {peak_rss_mb():.0f} MB); longest pause {pause:.1f} ms"
        )
    app.extensions["chatapp.generator"].close()
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
