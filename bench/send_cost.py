"""What one send costs the server: worker CPU per send and the opening of its answer's stream.

One gevent worker under gunicorn (the Procfile's worker class), SQLite, and the fake upstream holding
every answer back for a minute, so no tokens stream and the worker's CPU is the sends' own: the
request, its database work, the start of the model request, and the stream request that follows it.
The sends go one after another (each waits for its stream's first event), N of them; the guests,
cookies and conversations they use are made before the clock starts.

    .venv/bin/python bench/send_cost.py --sends 400 --door api
    .venv/bin/python bench/send_cost.py --sends 400 --door page

With 150 sends arriving together on two cores, the median send waits for about half of the others:
this cost, times 75 per worker, is most of the time to the first token under a burst (bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent))

import load  # noqa: E402 - bench/load.py's client, servers and process helpers


async def send_api(port: int, session: tuple[str, str]) -> load.Response:
    token, conversation_id = session
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    path = f"/api/v1/conversations/{conversation_id}/messages"
    sent = await load.request(port, "POST", path, b'{"content": "hello there"}', headers)
    body = json.loads(await sent.body())
    sent.close()
    return await load.request(port, "GET", body["stream_url"], headers={"Authorization": f"Bearer {token}"})


async def send_page(port: int, session: tuple[str, str]) -> load.Response:
    cookie, csrf = session
    form = urlencode({"csrf_token": csrf, "content": "hello there"}).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie}
    sent = await load.request(port, "POST", "/conversations", form, headers)
    await sent.body()
    sent.close()
    answer_id = sent.headers["location"].rsplit("message-", 1)[1]
    cookie = sent.headers.get("set-cookie", cookie).split(";", 1)[0]  # the first send makes the guest
    return await load.request(port, "GET", f"/messages/{answer_id}/events", headers={"Cookie": cookie})


async def measure(port: int, worker: int, door: str, sends: int) -> float:
    make = load.api_session if door == "api" else load.app_session
    sessions = [await make(port) for _ in range(sends)]
    send = send_api if door == "api" else send_page
    streams = []
    ticks = load.cpu_ticks([worker])
    for session in sessions:
        stream = await send(port, session)
        await stream.reader.readuntil(b"\n\n")  # its first event: the stream is open
        streams.append(stream)
    seconds = (load.cpu_ticks([worker]) - ticks) / os.sysconf("SC_CLK_TCK")
    for stream in streams:
        stream.close()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sends", type=int, default=400)
    parser.add_argument("--door", choices=["api", "page"], default="api")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="chatapp-send-cost-"))
    upstream = load.fake_upstream(5, 50, first_delay=60)  # holds every answer: no tokens flow
    processes = [upstream]
    try:
        base_url = upstream.stdout.readline().split()[1]
        env = load.app_env(base_url, f"sqlite:///{workdir / 'bench.sqlite3'}")
        port = load.free_port()
        server = argparse.Namespace(worker_class="gevent", workers=1, threads=1)
        processes.append(load.gunicorn("wsgi:app", port, server, env, workdir / "app.log"))
        load.wait_http(f"http://127.0.0.1:{port}/healthz")
        time.sleep(1)  # the worker has warmed up
        worker = int(Path(f"/proc/{processes[1].pid}/task/{processes[1].pid}/children").read_text().split()[0])
        seconds = asyncio.run(measure(port, worker, args.door, args.sends))
    finally:
        load.stop(processes)
        upstream.stdout.close()
    print(
        f"{args.door}: {args.sends} sends and their streams opened, one after another: worker CPU "
        f"{seconds:.2f} s, {seconds / args.sends * 1000:.2f} ms per send (server log in {workdir})"
    )


if __name__ == "__main__":
    main()
