"""Live share links under load: N viewers of one live link, as their browsers use it.

chatapp runs under gunicorn (one worker) with the fake upstream as its own process. The owner makes a
live link; N viewers load the shared page at once (timed), then each holds the page's watch stream
(``/s/<token>/watch``: it polls the database once a second per viewer). Measured:

- the shared page's load time with N viewers loading it at once (p50/p99);
- the server's CPU while the N watch streams sit idle (the cost of the once-a-second polling);
- when the owner sends a message: how long until each viewer's watch stream delivers the new
  messages (p50/p99/max), then the answer's updates on the same stream (``answer`` events, the page's
  one stream): p99 largest gap between updates, and how many viewers got the whole answer.

    python bench/share_watchers.py --viewers 50 100 --tokens 200 --rate 50 --worker-class gevent
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.load import (  # noqa: E402
    app_session,
    cpu_ticks,
    free_port,
    gunicorn,
    percentile,
    request,
    sse_events,
    wait_http,
)

IDLE_SECONDS = 10.0


async def post_form(port: int, path: str, cookie: str, fields: dict) -> tuple[int, str, str]:
    """A form POST; (status, Location, the cookie to use from now on)."""
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie}
    response = await request(port, "POST", path, urlencode(fields).encode(), headers)
    await response.body()
    response.close()
    if "set-cookie" in response.headers:
        cookie = response.headers["set-cookie"].split(";", 1)[0]
    return response.status, response.headers.get("location", ""), cookie


async def get_text(port: int, path: str, cookie: str = "") -> tuple[int, str]:
    response = await request(port, "GET", path, headers={"Cookie": cookie} if cookie else {})
    body = (await response.body()).decode()
    response.close()
    return response.status, body


async def wait_answer_done(port: int, cookie: str, answer_id: str, timeout: float) -> None:
    response = await request(port, "GET", f"/messages/{answer_id}/events", headers={"Cookie": cookie})
    try:
        async for name, _data in sse_events(response):
            if name == "done":
                return
    finally:
        response.close()


async def run(port: int, viewers: int, timeout: float, servers: list[int]) -> dict:
    cookie, csrf = await app_session(port)
    status, location, cookie = await post_form(port, "/conversations", cookie, {"csrf_token": csrf, "content": "hi"})
    assert status == 303, status
    conversation_id = re.search(r"/c/(\d+)", location).group(1)
    await asyncio.wait_for(wait_answer_done(port, cookie, location.rsplit("message-", 1)[1], timeout), timeout)
    fields = {"csrf_token": csrf, "kind": "live", "visibility": "anyone", "expires": ""}
    status, location, cookie = await post_form(port, f"/c/{conversation_id}/share", cookie, fields)
    assert status == 303, status
    _, page = await get_text(port, location, cookie)
    token = re.search(r'class="share-url" value="[^"]*/s/([^"]+)"', page).group(1)

    async def load_page() -> float:
        start = time.perf_counter()
        status, _ = await get_text(port, f"/s/{token}")
        assert status == 200, status
        return time.perf_counter() - start

    page_times = await asyncio.gather(*(load_page() for _ in range(viewers)))

    sent_at: list[float] = []
    changed_after: list[float | None] = [None] * viewers
    gaps: list[float] = []
    complete = 0
    watching = asyncio.Event()
    opened = 0

    async def watch(i: int) -> None:
        """The page's one stream: the new messages, then the answer's updates until it is complete."""
        nonlocal opened, complete
        response = await request(port, "GET", f"/s/{token}/watch")
        opened += 1
        if opened == viewers:
            watching.set()
        times: list[float] = []
        try:
            async for name, data in sse_events(response):
                if name == "changed" and sent_at:
                    changed_after[i] = changed_after[i] or time.perf_counter() - sent_at[0]
                    if 'data-status="streaming"' not in data:  # the messages again: the answer has ended
                        complete += bool(times)
                        return
                elif name == "answer" and changed_after[i] is not None:
                    times.append(time.perf_counter())
                    if 'data-status="complete"' in data:
                        complete += 1
                        return
        finally:
            response.close()
            if times:
                gaps.append(max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0))

    watchers = [asyncio.create_task(watch(i)) for i in range(viewers)]
    await asyncio.wait_for(watching.wait(), timeout)
    await asyncio.sleep(1.5)  # every stream past its first look
    ticks = cpu_ticks(servers)
    await asyncio.sleep(IDLE_SECONDS)
    idle_cpu = (cpu_ticks(servers) - ticks) / os.sysconf("SC_CLK_TCK")

    sent_at.append(time.perf_counter())
    fields = {"csrf_token": csrf, "content": "tell the viewers a story"}
    status, location, cookie = await post_form(port, f"/c/{conversation_id}/messages", cookie, fields)
    assert status == 303, status
    await asyncio.wait_for(asyncio.gather(*watchers, return_exceptions=True), timeout)
    delays = [d for d in changed_after if d is not None]
    return {
        "viewers": viewers,
        "page_p50_ms": percentile(page_times, 50) * 1000,
        "page_p99_ms": percentile(page_times, 99) * 1000,
        "idle_cpu_s": idle_cpu,
        "changed_p50_ms": percentile(delays, 50) * 1000 if delays else float("nan"),
        "changed_p99_ms": percentile(delays, 99) * 1000 if delays else float("nan"),
        "changed_max_ms": max(delays) * 1000 if delays else float("nan"),
        "saw_new": len(delays),
        "gap_p99_ms": percentile(gaps, 99) * 1000 if gaps else float("nan"),
        "complete": complete,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--viewers", type=int, nargs="+", default=[50, 100])
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--worker-class", choices=["gthread", "gevent"], default="gevent")
    parser.add_argument("--threads", type=int, default=256)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="chatapp-bench-share-"))
    upstream = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "fake_upstream.py"), "--tokens", str(args.tokens)]
        + ["--rate", str(args.rate)],
        stdout=subprocess.PIPE,
        text=True,
    )
    processes = [upstream]
    rows = []
    try:
        base_url = upstream.stdout.readline().split()[1]
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
            "PYTHONPATH": str(ROOT),
        }
        port = free_port()
        processes.append(gunicorn("wsgi:app", port, args, env, workdir / "app.log"))
        wait_http(f"http://127.0.0.1:{port}/healthz")
        timeout = args.tokens / args.rate + 60
        for viewers in args.viewers:
            rows.append(asyncio.run(run(port, viewers, timeout, [processes[1].pid])))
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)
        upstream.stdout.close()

    print(f"$ python bench/share_watchers.py {' '.join(sys.argv[1:])}")
    print(f"{args.worker_class}, {args.workers} worker(s), SQLite; answer {args.tokens} tokens at {args.rate:g}/s")
    print(
        "| viewers | page p50 ms | page p99 ms | idle CPU s per 10 s | new messages p50 ms | p99 ms | max ms "
        "| saw them | answer p99 largest gap ms | got the whole answer |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['viewers']} | {r['page_p50_ms']:.0f} | {r['page_p99_ms']:.0f} | {r['idle_cpu_s']:.2f} "
            f"| {r['changed_p50_ms']:.0f} | {r['changed_p99_ms']:.0f} | {r['changed_max_ms']:.0f} "
            f"| {r['saw_new']}/{r['viewers']} | {r['gap_p99_ms']:.0f} | {r['complete']}/{r['viewers']} |"
        )


if __name__ == "__main__":
    main()
