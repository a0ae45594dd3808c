"""The baseline for bench/load.py: the smallest Flask relay from an OpenAI-compatible stream to SSE.

No database, no background generation, no broker: the request itself reads the upstream stream and
writes each delta to the client. Serve it with the same gunicorn worker class as the app:
``gunicorn -k gthread --threads 256 bench.relay:app``.
"""

from __future__ import annotations

import os

import openai
from flask import Flask, Response, request, stream_with_context

app = Flask(__name__)
client = openai.OpenAI(base_url=os.environ["OPENAI_BASE_URL"], api_key="x", max_retries=0)


@app.get("/healthz")
def healthz() -> str:
    """Up."""
    return "ok"


@app.post("/relay")
def relay() -> Response:
    """Stream the model's answer to ``content`` as SSE ``delta`` events, then ``done``."""
    content = request.form.get("content", "")

    def events():  # noqa: ANN202
        stream = client.chat.completions.create(
            model=os.environ.get("CHAT_MODEL", "fake-model"),
            messages=[{"role": "user", "content": content}],
            stream=True,
        )
        for chunk in stream:
            for choice in chunk.choices:
                if choice.delta.content:
                    yield f"event: delta\ndata: {choice.delta.content}\n\n"
        yield "event: done\ndata: end\n\n"

    return Response(stream_with_context(events()), mimetype="text/event-stream")
