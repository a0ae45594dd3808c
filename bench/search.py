"""Search benchmark: one identity with 100,000 messages; query time idle and while answers stream.

Prints, for SQLite and/or PostgreSQL:

- the p50/p95 of ``chatapp.search.search`` (first page of 20, snippets included) in-process, per kind of
  query (a common prefix, two words, a phrase, a rare word, an accented word, newest or best first);
- the p50 of ``GET /api/v1/search`` over HTTP (gunicorn, gevent) idle, then while N answers stream
  through the same server from the fake upstream (``bench/load.py``'s machinery);
- what indexing adds to a send: the p50 of ``search.index_message`` (and of a 600-word answer's), the
  work done inside the send's (or the answer's final) transaction.

Targets: query p50 <= 30 ms on both databases, also while 100 answers stream; indexing <= 2 ms.

    python bench/search.py --messages 100000 --streams 100
    python bench/search.py --databases postgresql://postgres@127.0.0.1:5432/test --messages 100000

A PostgreSQL URL names an existing database to connect to: a fresh database is made beside it and
dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import load  # noqa: E402  (bench/load.py: the HTTP client, gunicorn and the API streams)
from sqlalchemy import func, insert, select, text  # noqa: E402

from chatapp import create_app, search  # noqa: E402
from chatapp.extensions import db  # noqa: E402
from chatapp.models import ApiToken, Conversation, Message, SearchEntry, User, utcnow  # noqa: E402

PER_CONVERSATION = 50
WORDS_PER_MESSAGE = (20, 80)
QUERIES = {
    "common prefix": "pyth",
    "two words": "kubernetes deploy",
    "phrase": '"quick brown fox"',
    "rare word": "zanzibar",
    "accented": "creme",
    "very common prefix": "da",
}


def vocabulary(rng: random.Random, size: int = 20000) -> list[str]:
    """Made-up words (syllables), most frequent first."""
    syllables = ["ka", "lo", "mi", "ra", "te", "su", "no", "vi", "pe", "da", "go", "ze", "ul", "an", "or", "is"]
    words = {"".join(rng.choices(syllables, k=rng.randint(1, 4))) for _ in range(size * 2)}
    return sorted(words, key=lambda w: (len(w), w))[:size]


def message_text(rng: random.Random, words: list[str], weights: list[float]) -> str:
    """A message of made-up words with, at set rates, the words the queries look for."""
    chosen = rng.choices(words, weights=weights, k=rng.randint(*WORDS_PER_MESSAGE))
    roll = rng.random()
    if roll < 0.05:
        chosen.insert(rng.randrange(len(chosen)), rng.choice(["python", "Python's", "pythonic"]))
    elif roll < 0.06:
        chosen[rng.randrange(len(chosen)) :] = ["kubernetes", "deployment", "rolled", "back"]
    elif roll < 0.061:
        chosen.insert(rng.randrange(len(chosen)), "the quick brown fox")
    elif roll < 0.07:
        chosen.insert(rng.randrange(len(chosen)), rng.choice(["crème", "Crème brûlée", "creme"]))
    elif roll < 0.0701:
        chosen.insert(rng.randrange(len(chosen)), "Zanzibar")
    return " ".join(chosen).capitalize() + "."


def seed(count: int) -> tuple[User, str]:
    """One identity with ``count`` messages (and their index entries); its API token."""
    rng = random.Random(12)
    words = vocabulary(rng)
    weights = [1 / (rank + 10) for rank in range(len(words))]
    user = User(username="bench")
    db.session.add(user)
    db.session.flush()
    token_row, token = ApiToken.issue(user.id, "bench")
    db.session.add(token_row)
    db.session.commit()
    started = time.perf_counter()
    start = utcnow() - timedelta(days=400)
    conversations = max(1, count // PER_CONVERSATION)
    next_message = (db.session.scalar(select(func.max(Message.id))) or 0) + 1
    for first in range(0, conversations, 100):
        conv_rows, message_rows, entry_rows = [], [], []
        for c in range(first, min(first + 100, conversations)):
            when = start + timedelta(minutes=c * 200)
            title = " ".join(rng.choices(words[:2000], k=4)).capitalize()
            conv_rows.append({"id": c + 1, "user_id": user.id, "title": title, "created_at": when, "updated_at": when})
            entry_rows.append(
                {
                    "conversation_id": c + 1,
                    "message_id": None,
                    "role": "title",
                    "created_at": when,
                    "body": search.normalise(title),
                }
            )
            parent = None
            for m in range(min(PER_CONVERSATION, count - c * PER_CONVERSATION)):
                role = "user" if m % 2 == 0 else "assistant"
                content, moment = message_text(rng, words, weights), when + timedelta(minutes=m)
                message_rows.append(
                    {
                        "id": next_message,
                        "conversation_id": c + 1,
                        "parent_id": parent,
                        "role": role,
                        "content": content,
                        "status": "complete",
                        "created_at": moment,
                        "updated_at": moment,
                    }
                )
                entry_rows.append(
                    {
                        "conversation_id": c + 1,
                        "message_id": next_message,
                        "role": role,
                        "created_at": moment,
                        "body": search.normalise(content),
                    }
                )
                parent, next_message = next_message, next_message + 1
            conv_rows[-1]["active_leaf_id"] = parent
        db.session.execute(insert(Conversation), conv_rows)
        db.session.execute(insert(Message), message_rows)
        db.session.execute(insert(SearchEntry), entry_rows)
        db.session.commit()
    if db.engine.dialect.name == "postgresql":  # ids were given: move the sequences past them
        for table in ("conversation", "message"):
            db.session.execute(text(f"SELECT setval('{table}_id_seq', (SELECT max(id) FROM {table}))"))
    db.session.execute(text("ANALYZE"))  # fresh statistics for the planner, as autovacuum would give
    db.session.commit()
    if db.engine.dialect.name == "postgresql":  # and the GIN index's pending list merged, as autovacuum does
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM search_entry"))
    print(f"  seeded {count:,} messages in {conversations:,} conversations in {time.perf_counter() - started:.0f} s")
    return user, token


def timed(call, repeat: int) -> list[float]:  # noqa: ANN001
    values = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        values.append((time.perf_counter() - started) * 1000)
    return values


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def in_process(user: User, repeat: int) -> dict:
    """p50/p95 ms per query, in-process, first page of 20 with snippets."""
    rows = {}
    for order in ("newest", "relevance"):
        for name, query in QUERIES.items():
            filters = search.Filters(order=order)
            hits = len(search.search(user, query, filters, 20).results)
            values = timed(lambda q=query, f=filters: search.search(user, q, f, 20), repeat)
            rows[f"{name} ({order})"] = (statistics.median(values), p(values, 0.95), hits)
    return rows


def indexing_cost(user: User, repeat: int) -> tuple[float, float]:
    """p50 ms of indexing a ~50-word message, and a ~600-word answer, inside a transaction (rolled back)."""
    rng = random.Random(3)
    words = vocabulary(rng, 3000)
    conversation = db.session.scalars(select(Conversation).where(Conversation.user_id == user.id).limit(1)).one()
    short, long_ = [], []
    for sizes, into in ((50, short), (600, long_)):
        for _ in range(repeat):
            message = Message(
                conversation_id=conversation.id, role="user", content=" ".join(rng.choices(words, k=sizes))
            )
            db.session.add(message)
            db.session.flush()
            started = time.perf_counter()
            search.index_message(message)  # as a send does: the message at hand, nothing read back
            into.append((time.perf_counter() - started) * 1000)
            db.session.rollback()
    return statistics.median(short), statistics.median(long_)


async def http_searches(port: int, token: str, stop: asyncio.Event, out: list[float]) -> None:
    """GET /api/v1/search in a loop (the queries in turn) until ``stop``; latencies in ms."""
    queries = list(QUERIES.values())
    i = 0
    while not stop.is_set():
        path = "/api/v1/search?" + urlencode({"q": queries[i % len(queries)], "limit": 20})
        started = time.perf_counter()
        response = await load.request(port, "GET", path, headers={"Authorization": f"Bearer {token}"})
        await response.body()
        response.close()
        if response.status != 200:
            raise RuntimeError(f"search answered {response.status}")
        out.append((time.perf_counter() - started) * 1000)
        i += 1


def direct_searches(app, user_id: str, stop: threading.Event, out: list[float]) -> None:  # noqa: ANN001
    """``search.search`` in a loop in this process (its own connection to the same database) until ``stop``."""
    queries = list(QUERIES.values())
    with app.app_context():
        user = db.session.get(User, user_id)
        i = 0
        while not stop.is_set():
            started = time.perf_counter()
            search.search(user, queries[i % len(queries)], None, 20)
            out.append((time.perf_counter() - started) * 1000)
            db.session.rollback()  # a fresh snapshot each time, as a request would have
            i += 1
            time.sleep(0.02)
        db.session.remove()


async def under_load(port: int, token: str, streams: int, timeout: float, app, user_id: str) -> dict:  # noqa: ANN001
    """Search latencies idle (3 s), then while ``streams`` answers stream: over HTTP through the
    streaming server, and directly against the database from this process; failed streams."""
    figures: dict = {"idle": [], "busy": [], "direct": []}
    stop = asyncio.Event()
    task = asyncio.create_task(http_searches(port, token, stop, figures["idle"]))
    await asyncio.sleep(3)
    stop.set()
    await task
    stop = asyncio.Event()
    task = asyncio.create_task(http_searches(port, token, stop, figures["busy"]))
    halt = threading.Event()
    direct = threading.Thread(target=direct_searches, args=(app, user_id, halt, figures["direct"]))
    direct.start()
    results, _wall = await load.run_streams("api", port, streams, timeout)
    halt.set()
    stop.set()
    await task
    await asyncio.to_thread(direct.join)
    figures["failed"] = sum(1 for r in results if r.error)
    return figures


def fresh_database(url: str) -> tuple[str, Callable[[], None]]:
    """A new PostgreSQL database beside ``url``; its URL and a function that drops it."""
    import psycopg

    name = f"chatapp_bench_{secrets.token_hex(4)}"
    admin = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return f"{admin.rsplit('/', 1)[0]}/{name}", drop


def run(database: str, args: argparse.Namespace, workdir: Path) -> None:
    drop = None
    if database == "sqlite":
        url = f"sqlite:///{workdir / 'search.sqlite3'}"
    else:
        url, drop = fresh_database(database)
    label = "SQLite" if database == "sqlite" else "PostgreSQL"
    print(f"\n## {label}")
    try:
        app = create_app({"DATABASE_URL": url, "SECRET_KEY": "bench", "OPENAI_API_KEY": "x", "ANSWER_LIMITS": False})
        with app.app_context():
            user, token = seed(args.messages)
            print(f"  in-process search, first page of 20, {args.repeat} runs each (ms):")
            print("  | query | p50 | p95 | results |\n  | --- | ---: | ---: | ---: |")
            rows = in_process(user, args.repeat)
            for name, (p50, p95, hits) in rows.items():
                print(f"  | {name} | {p50:.1f} | {p95:.1f} | {hits} |")
            overall = statistics.median([r[0] for r in rows.values()])
            worst = max(r[0] for r in rows.values())
            print(f"  p50 over the queries' p50s: {overall:.1f} ms; slowest query's p50: {worst:.1f} ms (target <= 30)")
            short, long_ = indexing_cost(user, args.repeat)
            print(f"  indexing one message: p50 {short:.2f} ms (50 words), {long_:.2f} ms (600 words) (target <= 2 ms)")
            user_id = user.id
        if args.streams:
            http_run(url, token, args, workdir, app, user_id)
        app.extensions["chatapp.generator"].close()
        with app.app_context():
            db.engine.dispose()
    finally:
        if drop:
            drop()


def http_run(url: str, token: str, args: argparse.Namespace, workdir: Path, app, user_id: str) -> None:  # noqa: ANN001
    """The same database behind gunicorn; searches over HTTP idle and while answers stream."""
    upstream = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "fake_upstream.py"), "--tokens", str(args.tokens), "--rate", "50"],
        stdout=subprocess.PIPE,
        text=True,
    )
    processes = [upstream]
    try:
        base_url = upstream.stdout.readline().split()[1]  # type: ignore[union-attr]
        env = {
            **os.environ,
            "OPENAI_BASE_URL": base_url,
            "OPENAI_API_KEY": "x",
            "CHAT_MODEL": "fake-model",
            "SECRET_KEY": "bench",
            "DATABASE_URL": url,
            "MAX_RESPONSE_TOKENS": str(args.tokens * 4),
            "ANSWER_LIMITS": "off",
            "GUEST_LIMIT_PER_IP": "off",
            "PYTHONPATH": str(ROOT),
        }
        port = load.free_port()
        options = argparse.Namespace(workers=1, worker_class="gevent", threads=1)
        processes.append(load.gunicorn("wsgi:app", port, options, env, workdir / "app.log"))
        load.wait_http(f"http://127.0.0.1:{port}/healthz")
        got = asyncio.run(under_load(port, token, args.streams, args.tokens / 50 + 60, app, user_id))
        idle, busy, direct = got["idle"], got["busy"], got["direct"]
        print(
            f"  while {args.streams} answers stream through the server ({got['failed']} streams failed):\n"
            f"  - search.search in this process, same database: p50 {statistics.median(direct):.1f} ms, "
            f"p95 {p(direct, 0.95):.1f} ms ({len(direct)} queries)\n"
            f"  - GET /api/v1/search through the streaming server (gunicorn gevent, 1 worker): p50 "
            f"{statistics.median(busy):.1f} ms, p95 {p(busy, 0.95):.1f} ms ({len(busy)} requests); "
            f"idle before: p50 {statistics.median(idle):.1f} ms ({len(idle)} requests)"
        )
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)
        upstream.stdout.close()  # type: ignore[union-attr]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--databases", nargs="+", default=["sqlite", os.environ.get("TEST_DATABASE_URL") or ""])
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--streams", type=int, default=100, help="answers streaming during the HTTP run; 0: skip")
    parser.add_argument("--tokens", type=int, default=400, help="tokens per streamed answer (50 per second)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # a stopped run still drops its database
    print(f"$ python bench/search.py {' '.join(sys.argv[1:])}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    workdir = Path(tempfile.mkdtemp(prefix="chatapp-search-bench-"))
    for database in filter(None, args.databases):
        run(database, args, workdir)
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
