"""What the notes tool loop adds to an answer: the pause from the last byte of a round that ends in a
tool call to the next request to the model (storing the note, publishing it, asking again), in-process.

    .venv/bin/python bench/notes_tool.py --answers 30

Prints p50/p99 of that pause and of the time from sending a message to the model's first request, both
against the fake upstream over real HTTP on SQLite. The goal: the pause is ≤ 20 ms (p50).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chatapp import create_app  # noqa: E402
from tests.clients import ApiClient, stored, wait_until  # noqa: E402
from tests.fake_upstream import FakeUpstream, Reply, save_note  # noqa: E402

GOAL_MS = 20.0


def main() -> None:
    """Run ``--answers`` answers with one tool round each, then print the pause figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--answers", type=int, default=30)
    args = parser.parse_args()
    upstream = FakeUpstream().start()
    folder = tempfile.mkdtemp()
    app = create_app(
        {
            "SECRET_KEY": "bench",
            "DATABASE_URL": f"sqlite:///{folder}/bench.sqlite3",
            "OPENAI_BASE_URL": upstream.base_url,
            "OPENAI_API_KEY": "bench",
            "CHAT_MODEL": "fake-model",
            "REDIS_URL": None,
            "ANSWER_LIMITS": False,
            "UPLOAD_FOLDER": folder,
        }
    )
    api = ApiClient(app)
    conversation = api.call("POST", "/conversations", {}).get_json()["id"]
    pauses, starts = [], []
    for number in range(args.answers):
        upstream.reset()
        upstream.script(Reply(tokens=["a", " b"], tool_calls=[save_note(f"note {number}")]), Reply(tokens=[" c"]))
        sent_at = time.monotonic()
        sent = api.call("POST", f"/conversations/{conversation}/messages", {"content": f"go {number}"}).get_json()
        answer = sent["assistant_message"]["id"]
        wait_until(lambda answer=answer: stored(app, answer).status != "streaming", "the answer ends", 30)
        first, second = upstream.arrivals[:2]
        starts.append((first - sent_at) * 1000)
        pauses.append((second - upstream.ends[0]) * 1000)  # from the tool call's last byte to the next request
    app.extensions["chatapp.generator"].close()
    upstream.stop()
    pauses.sort()
    starts.sort()

    def p99(values: list[float]) -> float:
        return values[min(len(values) - 1, round(0.99 * (len(values) - 1)))]

    print(f"answers: {args.answers}")
    print(f"send → first request: p50 {statistics.median(starts):.1f} ms, p99 {p99(starts):.1f} ms")
    print(
        "tool call's last byte → next request (note stored and published, asked again): "
        f"p50 {statistics.median(pauses):.1f} ms, p99 {p99(pauses):.1f} ms"
    )
    print("PASS" if statistics.median(pauses) <= GOAL_MS else "FAIL", f"(goal: p50 ≤ {GOAL_MS:g} ms)")


if __name__ == "__main__":
    main()
