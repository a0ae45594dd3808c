"""Room benchmark: one answer watched by many people in a room while many other answers stream.

A room's owner sends a message; ``--watchers`` members (guests who joined through the invite link)
follow it on the room page's one event stream (``GET /c/<id>/events``, rendered fragments), while
``--others`` other conversations stream their own answers through the page's per-answer stream
(bench/load.py's ``app`` target) at the same time. Per group it prints p50/p99 time to first token,
the p99 over streams of each stream's largest gap between updates, tokens lost and failures.
Goal: p99 largest gap <= 250 ms for every watcher and nothing lost.

    python bench/room.py --watchers 50 --others 100 --tokens 250 --rate 50 --worker-class gevent

It reuses bench/load.py's HTTP client, processes and figures; everything listens on 127.0.0.1 and
every stream has a timeout, so a run always ends.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import html
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.load import (  # noqa: E402 - after the path is set
    TOKEN,
    Result,
    app_session,
    free_port,
    gunicorn,
    record,
    request,
    sse_events,
    stream_app,
    summarize,
    wait_http,
)

CONNECT_WAIT = 120.0  # seconds the watchers may take to open their streams (not timed)


def cookie_of(response, cookie: str) -> str:  # noqa: ANN001
    """The session cookie after a response (a new one when it names a new guest)."""
    return response.headers["set-cookie"].split(";", 1)[0] if "set-cookie" in response.headers else cookie


async def post_form(port: int, path: str, cookie: str, fields: dict):  # noqa: ANN201
    form = urlencode(fields).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie}
    response = await request(port, "POST", path, form, headers)
    await response.body()
    response.close()
    return response


async def get_page(port: int, path: str, cookie: str) -> str:
    response = await request(port, "GET", path, headers={"Cookie": cookie})
    page = (await response.body()).decode()
    response.close()
    return page


async def open_room(port: int) -> tuple[str, str, int, str]:
    """The owner's cookie and CSRF token, the room's id and its invite token (setup, not timed)."""
    cookie, token = await app_session(port)
    response = await post_form(port, "/conversations", cookie, {"csrf_token": token, "content": "room warm-up"})
    cookie = cookie_of(response, cookie)
    conversation_id = int(re.search(r"/c/(\d+)", response.headers["location"]).group(1))
    answer_id = response.headers["location"].rsplit("message-", 1)[1]
    events = await request(port, "GET", f"/messages/{answer_id}/events", headers={"Cookie": cookie})
    async for name, _data in sse_events(events):  # the warm-up answer ends before the room fills
        if name == "done":
            break
    events.close()
    response = await post_form(port, f"/c/{conversation_id}/invite", cookie, {"csrf_token": token, "role": "member"})
    page = await get_page(port, f"/c/{conversation_id}", cookie)
    invite = re.search(r'id="invite-link" class="invite-link" readonly value="[^"]*/join/([^"]+)"', page).group(1)
    return cookie, token, conversation_id, invite


async def join(port: int, invite: str, conversation_id: int) -> tuple[str, str]:
    """A guest joins through the invite link; returns its cookie and its page's event stream path."""
    cookie, token = await app_session(port)
    response = await post_form(port, f"/join/{invite}", cookie, {"csrf_token": token})
    cookie = cookie_of(response, cookie)
    page = await get_page(port, f"/c/{conversation_id}", cookie)
    stream = html.unescape(re.search(r'sse-connect="(/c/\d+/events[^"]*)"', page).group(1))
    return cookie, stream


async def watch(port: int, session: tuple[str, str], result: Result, started: asyncio.Event, box: dict) -> None:
    """Follow the room's stream: every fragment of the watched answer counts, until its final one."""
    cookie, path = session
    response = await request(port, "GET", path, headers={"Cookie": cookie})
    try:
        events = sse_events(response)
        started.set()
        async for name, data in events:
            answer = box.get("answer")
            # Its renders (the tail of #message-N) and the words between them (appended to #pending-N).
            if name != "room" or answer is None or not (f"message-{answer}" in data or f"pending-{answer}" in data):
                continue
            text = html.unescape(re.sub(r"<[^>]+>", " ", data))
            if TOKEN.search(text):  # the answer's words (not the empty answer shown when it starts)
                record(result, box["start"], text)
            if 'hx-swap-oob="true"' in data and f'id="message-{answer}"' in data and "streaming" not in data:
                return
    finally:
        response.close()


async def run(port: int, args: argparse.Namespace) -> tuple[list[Result], list[Result], float]:
    timeout = args.tokens / args.rate + 60
    cookie, token, conversation_id, invite = await open_room(port)
    watchers = [await join(port, invite, conversation_id) for _ in range(args.watchers)]
    others = await asyncio.gather(*(app_session(port) for _ in range(args.others)))
    watched = [Result() for _ in watchers]
    streams = [Result() for _ in others]
    box: dict = {}
    ready = [asyncio.Event() for _ in watchers]

    async def guard(coroutine, result: Result, allowance: float = 0.0) -> None:  # noqa: ANN001
        try:
            await asyncio.wait_for(coroutine, timeout + allowance)
        except Exception as exc:  # noqa: BLE001 - every failure counts, whatever it is
            result.error = f"{type(exc).__name__}: {exc}"

    tasks = [
        asyncio.create_task(guard(watch(port, s, r, e, box), r, CONNECT_WAIT))
        for s, r, e in zip(watchers, watched, ready, strict=True)
    ]
    connect_start = time.perf_counter()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in ready)), CONNECT_WAIT)
    connected = sum(e.is_set() for e in ready)
    print(f"{connected} of {len(ready)} watchers connected in {time.perf_counter() - connect_start:.1f} s", flush=True)
    await asyncio.sleep(1.0)  # every page's presence has settled
    start = box["start"] = time.perf_counter()
    others_done = [
        asyncio.create_task(guard(stream_app(port, f"stream {i} says hello", r, s), r))
        for i, (s, r) in enumerate(zip(others, streams, strict=True))
    ]
    sent = await post_form(port, f"/c/{conversation_id}/messages", cookie, {"csrf_token": token, "content": "watch"})
    box["answer"] = sent.headers["location"].rsplit("message-", 1)[1]
    await asyncio.gather(*tasks, *others_done)
    return watched, streams, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--watchers", type=int, default=50)
    parser.add_argument("--others", type=int, default=100)
    parser.add_argument("--tokens", type=int, default=250)
    parser.add_argument("--rate", type=float, default=50.0, help="tokens per second per answer")
    parser.add_argument("--worker-class", choices=["gthread", "gevent"], default="gevent")
    parser.add_argument("--threads", type=int, default=256)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--redis-url", help="REDIS_URL for the app (needed with more than one worker)")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="chatapp-room-bench-"))
    command = [sys.executable, str(ROOT / "tests" / "fake_upstream.py"), "--tokens", str(args.tokens)]
    upstream = subprocess.Popen([*command, "--rate", str(args.rate)], stdout=subprocess.PIPE, text=True)
    processes = [upstream]
    try:
        base_url = upstream.stdout.readline().split()[1]  # type: ignore[union-attr]
        env = {
            **os.environ,
            "OPENAI_BASE_URL": base_url,
            "OPENAI_API_KEY": "x",
            "CHAT_MODEL": "fake-model",
            "SECRET_KEY": "bench",
            "DATABASE_URL": f"sqlite:///{workdir / 'bench.sqlite3'}",
            "MAX_RESPONSE_TOKENS": str(args.tokens * 4),
            "ANSWER_LIMITS": "off",
            "GUEST_LIMIT_PER_IP": "off",
            "MAX_ROOM_MEMBERS": str(args.watchers + 1),
            "PYTHONPATH": str(ROOT),
            **({"REDIS_URL": args.redis_url, "REDIS_PREFIX": f"bench-{os.getpid()}"} if args.redis_url else {}),
        }
        port = free_port()
        processes.append(gunicorn("wsgi:app", port, args, env, workdir / "app.log"))
        wait_http(f"http://127.0.0.1:{port}/healthz")
        load_before = os.getloadavg()
        watched, streams, wall = asyncio.run(run(port, args))
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(10)

    print(f"$ python bench/room.py {' '.join(sys.argv[1:])}")
    before, after = (" ".join(f"{x:.2f}" for x in values) for values in (load_before, os.getloadavg()))
    print(f"load average (1, 5, 15 min) before: {before}, after: {after}")
    print(
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, gunicorn {args.worker_class}"
        f" ({args.workers} worker{'s' if args.workers > 1 else ''}), {args.tokens} tokens per answer at"
        f" {args.rate:g} tokens/s{', Redis' if args.redis_url else ''}\n"
    )
    print("| streams | count | TTFT p50 ms | TTFT p99 ms | p99 largest gap ms | tokens lost | failed |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    rows = [("room watchers (one answer)", watched), ("other answers", streams)]
    summaries = {}
    for label, results in rows:
        row = summaries[label] = summarize(label, len(results), args.tokens, results, wall)
        print(
            f"| {label} | {row['streams']} | {row['ttft_p50_ms']:.1f} | {row['ttft_p99_ms']:.1f}"
            f" | {row['gap_p99_ms']:.0f} | {row['tokens_lost']} | {row['failed']} |"
        )
        for error in row["errors"]:
            print(f"  error: {error}")
    watchers = summaries["room watchers (one answer)"]
    ok = watchers["gap_p99_ms"] <= 250 and watchers["tokens_lost"] == 0 and watchers["failed"] == 0
    print(f"\nwatchers: p99 largest gap {watchers['gap_p99_ms']:.0f} ms (goal <= 250), lost {watchers['tokens_lost']}")
    print(f"goal: {'PASS' if ok else 'FAIL'}; server log: {workdir / 'app.log'}")


if __name__ == "__main__":
    main()
