"""Controls on the page and in the API: a conversation's settings, presets, retry with another model, copy as
Markdown, feedback, the token meter and costs. Pages as a browser without JavaScript sends them; the fake
upstream records what the app really asked the model for."""

from __future__ import annotations

import html
import json
import re

import pytest

from chatapp.extensions import db
from chatapp.models import Message, Preset
from chatapp.tokens import count_tokens
from tests.auth import sign_up, text
from tests.clients import ApiClient
from tests.conftest import Chat
from tests.fake_upstream import Reply


@pytest.fixture
def app(make_app, upstream):  # noqa: ANN001, ANN201
    upstream.models = ["fake-model", "other-model", "third-model"]
    return make_app()


def page_of(chat: Chat, conversation_id: int) -> str:
    return chat.get(f"/c/{conversation_id}").get_data(as_text=True)


def answered(chat: Chat, content: str = "hello") -> tuple[int, int]:
    """A conversation with one finished answer: (conversation id, answer id)."""
    conversation_id, answer_id = chat.start(content)
    assert chat.wait(answer_id).status == "complete"
    return conversation_id, answer_id


def options(page: str, select_id: str) -> list[str]:
    found = re.search(rf'<select id="{select_id}"[^>]*>(.*?)</select>', page, re.S)
    assert found, f"no select #{select_id}"
    return [html.unescape(o) for o in re.findall(r"<option[^>]*>([^<]*)</option>", found.group(1))]


# ---- the conversation's settings --------------------------------------------------------------------------


def test_settings_form_without_js_is_what_the_next_answer_uses(chat: Chat, upstream) -> None:  # noqa: ANN001
    conversation_id, _ = answered(chat)
    page = page_of(chat, conversation_id)
    assert '<details id="chat-settings"' in page
    assert options(page, "setting-model") == ["Default (fake-model)", "fake-model", "other-model", "third-model"]

    form = {"model": "other-model", "system_prompt": "Answer in French.", "temperature": "0.3", "max_tokens": "50"}
    response = chat.post(f"/c/{conversation_id}/settings", form)
    assert response.status_code == 303
    assert response.headers["Location"].endswith(f"/c/{conversation_id}?saved=1#chat-settings")
    page = chat.get(response.headers["Location"]).get_data(as_text=True)
    assert "Saved. The next answer uses these settings." in page
    assert "<option selected>other-model</option>" in page and "Answer in French.</textarea>" in page
    assert 'id="model-line" class="model"' in page and ">other-model<span" in page

    answer_id = chat.send(conversation_id, "and now?")
    assert chat.wait(answer_id).model == "other-model"
    sent = upstream.requests[-1]
    assert sent["model"] == "other-model" and sent["temperature"] == 0.3 and sent["max_tokens"] == 50
    assert sent["messages"][0] == {"role": "system", "content": "Answer in French."}

    # Back to the defaults: empty fields are the operator's values again.
    chat.post(f"/c/{conversation_id}/settings", {"model": "", "system_prompt": "", "temperature": "", "max_tokens": ""})
    chat.wait(chat.send(conversation_id, "once more"))
    sent = upstream.requests[-1]
    assert sent["model"] == "fake-model" and "temperature" not in sent and sent["max_tokens"] == 1024
    assert sent["messages"][0] == {"role": "system", "content": "You are a helpful assistant."}


def test_settings_errors_keep_what_was_typed(chat: Chat) -> None:
    conversation_id, _ = answered(chat)
    form = {"model": "", "system_prompt": "Be brief, my friend.", "temperature": "5", "max_tokens": "10"}
    response = chat.post(f"/c/{conversation_id}/settings", form)
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert "Temperature must be from 0 to 2." in page
    assert "Be brief, my friend.</textarea>" in page and 'value="5"' in page and 'value="10"' in page
    assert '<details id="chat-settings" class="chat-settings" open>' in page

    response = chat.post(f"/c/{conversation_id}/settings", {**form, "temperature": "", "max_tokens": "99999"})
    assert response.status_code == 422 and "max_tokens can be at most 1,024" in response.get_data(as_text=True)
    response = chat.post(f"/c/{conversation_id}/settings", {**form, "temperature": "nan"})
    assert response.status_code == 422 and "must be a number" in response.get_data(as_text=True)
    with chat.app.app_context():
        from chatapp.models import Conversation

        stored = db.session.get(Conversation, conversation_id)
        assert stored.system_prompt is None and stored.temperature is None  # nothing half-saved


def test_settings_with_htmx_swap_the_panel_and_the_model_line(chat: Chat) -> None:
    conversation_id, _ = answered(chat)
    form = {"csrf_token": chat.token, "model": "third-model", "system_prompt": "", "temperature": "", "max_tokens": ""}
    response = chat.client.post(f"/c/{conversation_id}/settings", data=form, headers={"HX-Request": "true"})
    assert response.status_code == 200
    fragment = response.get_data(as_text=True)
    assert fragment.lstrip().startswith('<details id="chat-settings"') and "<html" not in fragment
    assert (
        'id="model-line" class="model" title="The model that answers, and where it runs" hx-swap-oob="true">third-model'
        in fragment
    )
    response = chat.client.post(
        f"/c/{conversation_id}/settings", data={**form, "max_tokens": "x"}, headers={"HX-Request": "true"}
    )
    assert response.status_code == 422 and "Max tokens must be a whole number" in response.get_data(as_text=True)


def test_the_model_picker_is_limited_by_allowed_models(make_app, upstream) -> None:  # noqa: ANN001
    upstream.models = ["fake-model", "other-model", "third-model"]
    chat = Chat(make_app(ALLOWED_MODELS="fake-model,other-model,not-listed"))
    conversation_id, _ = answered(chat)
    page = page_of(chat, conversation_id)
    assert options(page, "setting-model") == ["Default (fake-model)", "fake-model", "other-model"]
    response = chat.post(f"/c/{conversation_id}/settings", {"model": "third-model"})
    assert response.status_code == 422
    assert "The model &#39;third-model&#39; is not offered here" in response.get_data(as_text=True)


def test_the_model_list_falls_back_when_the_upstream_cannot_list(make_app, upstream) -> None:  # noqa: ANN001
    upstream.models = []  # lists nothing: the configured model is offered
    chat = Chat(make_app())
    conversation_id, _ = answered(chat)
    assert options(page_of(chat, conversation_id), "setting-model") == ["Default (fake-model)", "fake-model"]
    chat = Chat(make_app(ALLOWED_MODELS="a-model,b-model"))  # and with ALLOWED_MODELS, those
    conversation_id, _ = answered(chat)
    assert options(page_of(chat, conversation_id), "setting-model") == ["Default (fake-model)", "a-model", "b-model"]


def test_the_model_list_is_kept_briefly_and_survives_an_unreachable_upstream(make_app, upstream) -> None:  # noqa: ANN001
    from chatapp.conversations import available_models

    app = make_app()
    chat = Chat(app)
    conversation_id, _ = answered(chat)
    assert options(page_of(chat, conversation_id), "setting-model") == ["Default (fake-model)", "fake-model"]
    upstream.models = ["fake-model", "new-model"]
    assert "new-model" not in options(page_of(chat, conversation_id), "setting-model")  # kept for a while
    app.extensions["chatapp.models"]["until"] = 0  # the while is over
    assert "new-model" in options(page_of(chat, conversation_id), "setting-model")

    closed = make_app(OPENAI_BASE_URL="http://127.0.0.1:9/v1", CHAT_MODEL="configured-model")
    with closed.app_context():
        assert available_models() == ["configured-model"]


# ---- presets ------------------------------------------------------------------------------------------


PRESET = {
    "name": "French tutor",
    "model": "other-model",
    "system_prompt": "Answer in French.",
    "temperature": "0.7",
    "max_tokens": "40",
    "opening_prompt": "Teach me a French word.",
}


def test_presets_on_the_settings_page_and_in_a_new_chat(chat: Chat, upstream) -> None:  # noqa: ANN001
    chat.get("/settings")
    response = chat.post("/settings/presets", PRESET)
    assert response.status_code == 303
    page = chat.get("/settings").get_data(as_text=True)
    assert "<h3>French tutor</h3>" in page and "other-model · temperature 0.7 · up to 40 tokens" in page
    preset_id = int(re.search(r'id="preset-(\d+)" class="preset"', page).group(1))

    # The new-chat form offers it; /?preset= (a link on the settings page) chooses it and fills the box.
    new_chat = chat.get(f"/?preset={preset_id}").get_data(as_text=True)
    assert options(new_chat, "preset") == ["Default settings", "French tutor"]
    assert f'<option value="{preset_id}" selected' in new_chat
    assert "Teach me a French word.</textarea>" in new_chat
    used = count_tokens("Answer in French.") + 4 + count_tokens("Teach me a French word.") + 4
    assert meter_numbers(new_chat)[1] == used  # the meter counts the preset's system prompt

    # Sent with an empty box: the opening prompt is the first message, with the preset's settings.
    response = chat.post("/conversations", {"content": "", "preset_id": str(preset_id)})
    assert response.status_code == 303
    answer_id = int(response.headers["Location"].rsplit("message-", 1)[1])
    assert chat.wait(answer_id).model == "other-model"
    sent = upstream.requests[-1]
    assert sent["model"] == "other-model" and sent["temperature"] == 0.7 and sent["max_tokens"] == 40
    assert sent["messages"] == [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "Teach me a French word."},
    ]

    # Without a preset: the operator's settings.
    chat.wait(chat.start("plain")[1])
    sent = upstream.requests[-1]
    assert sent["model"] == "fake-model" and "temperature" not in sent
    assert sent["messages"][0]["content"] == "You are a helpful assistant."


def test_preset_errors_edit_delete_and_ownership(app, chat: Chat) -> None:  # noqa: ANN001
    chat.get("/settings")
    chat.post("/settings/presets", PRESET)
    response = chat.post("/settings/presets", {**PRESET, "system_prompt": "kept", "temperature": "9"})
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert "Temperature must be from 0 to 2." in page and ">kept</textarea>" in page
    response = chat.post("/settings/presets", {**PRESET, "name": "  French   tutor "})
    assert response.status_code == 422 and "already have a preset named" in response.get_data(as_text=True)

    with app.app_context():
        preset_id = db.session.query(Preset.id).scalar()
    response = chat.post(f"/settings/presets/{preset_id}", {**PRESET, "name": "Tutor", "max_tokens": ""})
    assert response.status_code == 303
    page = chat.get("/settings").get_data(as_text=True)
    assert "<h3>Tutor</h3>" in page and "up to 40 tokens" not in page

    stranger = Chat(app)
    stranger.get("/settings")
    assert stranger.post(f"/settings/presets/{preset_id}/delete").status_code == 404
    assert stranger.post("/conversations", {"content": "hi", "preset_id": str(preset_id)}).status_code == 404
    assert chat.post(f"/settings/presets/{preset_id}/delete").status_code == 303
    assert "No presets yet." in chat.get("/settings").get_data(as_text=True)


def test_presets_in_the_api(app, upstream) -> None:  # noqa: ANN001
    api = ApiClient(app)
    body = {**PRESET, "temperature": 0.7, "max_tokens": 40}
    created = api.call("POST", "/presets", body)
    assert created.status_code == 201
    preset = created.get_json()
    assert {k: preset[k] for k in body} == body
    assert api.call("GET", "/presets").get_json()["items"] == [preset]
    assert api.call("PATCH", f"/presets/{preset['id']}", {"max_tokens": 30}).get_json()["max_tokens"] == 30
    refused = api.call("POST", "/presets", {**body, "model": "x" * 300})
    assert refused.status_code == 422 and "model" in refused.get_json()["error"]["message"]

    # A conversation started with it; fields sent with it win.
    conversation = api.call("POST", "/conversations", {"preset_id": preset["id"], "settings": {"temperature": 0.1}})
    assert conversation.status_code == 201
    data = conversation.get_json()
    assert data["model"] == "other-model" and data["system_prompt"] == "Answer in French."
    assert data["settings"] == {"temperature": 0.1, "max_tokens": 30}
    other = ApiClient(app)
    assert other.call("POST", "/conversations", {"preset_id": preset["id"]}).status_code == 404
    assert other.call("GET", f"/presets/{preset['id']}").status_code == 404
    assert api.call("DELETE", f"/presets/{preset['id']}").status_code == 204
    assert api.call("GET", "/presets").get_json()["items"] == []

    paths = api.client.get("/api/v1/openapi.json").get_json()["paths"]
    for path in ["/api/v1/presets", "/api/v1/presets/{preset_id}", "/api/v1/meter"]:
        assert path in paths, path
    assert "/api/v1/conversations/{conversation_id}/meter" in paths
    retry = paths["/api/v1/messages/{message_id}/retry"]["post"]
    assert retry["requestBody"]["required"] is False


def test_presets_come_along_when_a_guest_signs_up(app, chat: Chat) -> None:  # noqa: ANN001
    chat.get("/settings")
    chat.post("/settings/presets", PRESET)
    assert sign_up(chat, "alice").status_code == 303
    assert "<h3>French tutor</h3>" in chat.get("/settings").get_data(as_text=True)


# ---- retry with another model, copy as Markdown --------------------------------------------------------


def test_retry_with_another_model_and_the_versions_say_who_wrote_each(chat: Chat, upstream) -> None:  # noqa: ANN001
    conversation_id, answer_id = answered(chat)
    page = page_of(chat, conversation_id)
    assert options(page, f"retry-model-{answer_id}") == ["fake-model", "other-model", "third-model"]

    response = chat.post(f"/messages/{answer_id}/retry", {"model": "other-model"})
    assert response.status_code == 303
    second = int(response.headers["Location"].rsplit("message-", 1)[1])
    assert chat.wait(second).model == "other-model"
    assert upstream.requests[-1]["model"] == "other-model"
    page = page_of(chat, conversation_id)
    assert (
        "2 / 2" in page and '<span class="version-model" title="The model that wrote this version">other-model' in page
    )
    chat.post(f"/messages/{answer_id}/show")
    page = page_of(chat, conversation_id)
    assert (
        "1 / 2" in page and '<span class="version-model" title="The model that wrote this version">fake-model' in page
    )

    # The conversation keeps its model: the next answer is the default's again.
    chat.wait(chat.send(conversation_id, "next"))
    assert upstream.requests[-1]["model"] == "fake-model"

    # The API: the same, and a model outside ALLOWED_MODELS is refused.
    api = ApiClient(chat.app)
    conversation = api.call("POST", "/conversations", {}).get_json()
    sent = api.call("POST", f"/conversations/{conversation['id']}/messages", {"content": "hi"}).get_json()
    chat.wait(sent["assistant_message"]["id"])
    retried = api.call("POST", f"/messages/{sent['assistant_message']['id']}/retry", {"model": "third-model"})
    assert retried.status_code == 202 and retried.get_json()["assistant_message"]["model"] == "third-model"


def test_retry_model_must_be_allowed(make_app, upstream) -> None:  # noqa: ANN001
    chat = Chat(make_app(ALLOWED_MODELS="fake-model,other-model"))
    _, answer_id = answered(chat)
    response = chat.post(f"/messages/{answer_id}/retry", {"model": "third-model"})
    assert response.status_code == 422 and "not offered here" in response.get_data(as_text=True)


def test_copy_links_to_the_stored_markdown_as_plain_text(chat: Chat, upstream) -> None:  # noqa: ANN001
    source = "## Steps\n\n1. **Mix** the `flour`\n2. Bake <b>hot</b>\n"
    upstream.script(Reply(tokens=[source[i : i + 5] for i in range(0, len(source), 5)]))
    conversation_id, answer_id = answered(chat)
    page = page_of(chat, conversation_id)
    assert f'<a class="action copy-message" href="/messages/{answer_id}/markdown"' in page
    response = chat.get(f"/messages/{answer_id}/markdown")
    assert response.status_code == 200 and response.mimetype == "text/plain"
    assert response.get_data(as_text=True) == source  # exactly as stored, not rendered
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert Chat(chat.app).get(f"/messages/{answer_id}/markdown").status_code == 404


# ---- feedback -----------------------------------------------------------------------------------------


def pressed(page: str, answer_id: int) -> dict[str, str]:
    block = re.search(rf'<div id="feedback-{answer_id}".*?</form>', page, re.S).group(0)
    return dict(re.findall(r'class="action thumb thumb-(up|down)"\s+aria-pressed="(true|false)"', block))


def test_feedback_on_the_page_and_in_the_api_is_the_same(chat: Chat) -> None:
    conversation_id, answer_id = answered(chat)
    assert pressed(page_of(chat, conversation_id), answer_id) == {"up": "false", "down": "false"}

    response = chat.post(f"/messages/{answer_id}/feedback", {"rating": "up"})
    assert response.status_code == 303 and response.headers["Location"].endswith(f"#message-{answer_id}")
    assert pressed(page_of(chat, conversation_id), answer_id) == {"up": "true", "down": "false"}
    api = ApiClient(chat.app)
    with chat.app.app_context():  # the page's identity, seen through the API with a token of its own
        from chatapp.models import ApiToken

        message = db.session.get(Message, answer_id)
        row, token = ApiToken.issue(message.conversation.user_id, "test")
        db.session.add(row)
        db.session.commit()
    api = ApiClient(chat.app, token)
    assert api.call("GET", f"/messages/{answer_id}").get_json()["feedback"] == {"rating": "up", "comment": None}

    chat.post(f"/messages/{answer_id}/feedback", {"comment": "  Clear and short.  "})
    assert api.call("GET", f"/messages/{answer_id}").get_json()["feedback"] == {
        "rating": "up",
        "comment": "Clear and short.",
    }
    chat.post(f"/messages/{answer_id}/feedback", {"rating": ""})  # pressing the pressed thumb again clears it
    page = page_of(chat, conversation_id)
    assert pressed(page, answer_id) == {"up": "false", "down": "false"} and "Clear and short.</textarea>" in page

    api.call("POST", f"/messages/{answer_id}/feedback", {"rating": "down", "comment": "Wrong year."})
    page = page_of(chat, conversation_id)
    assert pressed(page, answer_id) == {"up": "false", "down": "true"} and "Wrong year.</textarea>" in page


def test_feedback_with_htmx_and_bad_input(chat: Chat) -> None:
    conversation_id, answer_id = answered(chat)
    response = chat.client.post(
        f"/messages/{answer_id}/feedback",
        data={"csrf_token": chat.token, "rating": "down"},
        headers={"HX-Request": "1"},
    )
    fragment = response.get_data(as_text=True)
    assert response.status_code == 200 and fragment.lstrip().startswith(f'<div id="feedback-{answer_id}"')
    assert pressed(fragment, answer_id) == {"up": "false", "down": "true"}

    long_comment = "why " * 600
    response = chat.post(f"/messages/{answer_id}/feedback", {"comment": long_comment})
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert "A comment can be at most 2,000 characters" in page and long_comment.strip() in page
    assert chat.post(f"/messages/{answer_id}/feedback", {"rating": "sideways"}).status_code == 422
    question_id = answer_id - 1
    assert chat.post(f"/messages/{question_id}/feedback", {"rating": "up"}).status_code == 422
    assert Chat(chat.app).post(f"/messages/{answer_id}/feedback", {"rating": "up"}).status_code == 404


def test_an_admin_sees_feedback_across_users(make_app) -> None:  # noqa: ANN001
    app = make_app(ADMIN_USERS="root")
    alice = Chat(app)
    sign_up(alice, "alice")
    _, answer_id = answered(alice, "what year is it")
    alice.post(f"/messages/{answer_id}/feedback", {"rating": "down", "comment": "Wrong year."})
    guest = Chat(app)
    _, other_id = answered(guest, "tell me a joke")
    guest.post(f"/messages/{other_id}/feedback", {"rating": "up"})

    root = Chat(app)
    sign_up(root, "root")
    page = text(root.get("/admin"))
    assert "alice Thumbs down Wrong year. fake-model" in page
    assert "Thumbs up — fake-model" in page
    assert "No feedback yet." not in page
    assert alice.get("/admin").status_code == 404


# ---- the token meter ----------------------------------------------------------------------------------


def meter_numbers(fragment: str) -> tuple[int, int, int]:
    """(draft tokens, context tokens, budget) as the meter shows them."""
    plain = " ".join(re.sub(r"<[^>]+>", " ", fragment).split()).replace(",", "")
    draft = int(re.search(r"(\d+) tokens? in your message", plain).group(1))
    used, budget = map(int, re.search(r"(\d+) of (\d+) context tokens", plain).groups())
    return draft, used, budget


def test_meter_counts_with_the_tokenizer_and_says_what_is_left_out(make_app, upstream) -> None:  # noqa: ANN001
    chat = Chat(make_app(MAX_HISTORY_TOKENS=120, SYSTEM_PROMPT="Be brief."))
    upstream.set_default(Reply(tokens=["word "] * 20))
    conversation_id, _ = answered(chat, "first " * 10)
    for n in range(2):
        chat.wait(chat.send(conversation_id, f"question {n} " + "more " * 10))

    draft = "How many tokens is this sentence, exactly?"
    response = chat.post(f"/c/{conversation_id}/meter", {"content": draft})
    assert response.status_code == 200
    fragment = response.get_data(as_text=True)
    tokens, used, budget = meter_numbers(fragment)
    assert tokens == count_tokens(draft) and budget == 120 and used <= 120

    api = ApiClient(chat.app)
    assert api.call("POST", "/meter", {"content": draft}).get_json()["draft_tokens"] == count_tokens(draft)
    # A new chat with a preset: its system prompt is what counts.
    preset = api.call("POST", "/presets", {"name": "long", "system_prompt": "word " * 50}).get_json()
    plain, with_preset = (
        api.call("POST", "/meter", {"content": draft, **extra}).get_json()["prompt_tokens"]
        for extra in ({}, {"preset_id": preset["id"]})
    )
    assert with_preset - plain == count_tokens(("word " * 50).strip()) - count_tokens("Be brief.")
    left_out = int(re.search(r"(\d+) older messages? will not be sent", fragment).group(1))
    assert left_out >= 1

    # What the meter said is what happens: the request leaves out exactly that many older messages.
    chat.wait(chat.send(conversation_id, draft))
    sent = upstream.requests[-1]["messages"]
    assert sent[0] == {"role": "system", "content": "Be brief."} and sent[-1]["content"] == draft
    assert len(sent) - 2 == 6 - left_out  # 6 earlier messages on the path, the oldest left out
    assert sum(count_tokens(m["content"]) + 4 for m in sent) == used


def test_meter_warns_before_a_message_is_refused_as_too_long(make_app) -> None:  # noqa: ANN001
    chat = Chat(make_app(MAX_USER_MESSAGE_TOKENS=20))
    chat.get("/")
    fragment = chat.post("/meter", {"content": "word " * 30}).get_data(as_text=True)
    assert "This message is 30 tokens long; the limit is 20. Shorten it, or it will not be sent." in fragment
    assert 'class="meter over"' in fragment
    fine = chat.post("/meter", {"content": "word " * 5}).get_data(as_text=True)
    assert "too long" not in fine and "will not be sent" not in fine
    assert chat.post("/meter", {"content": "x" * 100_001}).status_code == 413

    # Without JavaScript the meter is there after sending: a refused draft comes back with its count.
    conversation_id, _ = answered(chat)
    response = chat.post(f"/c/{conversation_id}/messages", {"content": "word " * 30})
    page = chat.get(response.headers["Location"]).get_data(as_text=True)
    assert meter_numbers(page)[0] == 30 and "the limit is 20" in page


def test_meter_in_the_api_for_a_conversation(app, upstream) -> None:  # noqa: ANN001
    api = ApiClient(app)
    conversation = api.call("POST", "/conversations", {"system_prompt": "Short."}).get_json()
    meter = api.call("POST", f"/conversations/{conversation['id']}/meter", {"content": "one two three"}).get_json()
    system, draft = count_tokens("Short."), count_tokens("one two three")
    assert meter == {
        "draft_tokens": draft,
        "message_limit": 4000,
        "too_long": False,
        "prompt_tokens": system + 4 + draft + 4,
        "budget": 6000,
        "percent": 0,
        "history_messages": 0,
        "left_out": 0,
    }
    assert api.call("POST", f"/conversations/{conversation['id']}/meter", {"text": "x"}).status_code == 422
    assert ApiClient(app).call("POST", f"/conversations/{conversation['id']}/meter", {"content": ""}).status_code == 404


# ---- cost ---------------------------------------------------------------------------------------------


def test_cost_from_model_prices_on_the_page_and_in_the_api(make_app, upstream) -> None:  # noqa: ANN001
    prices = {"fake-model": {"input": 2000, "output": 10000}}  # dollars per million tokens: big enough to see
    chat = Chat(make_app(MODEL_PRICES=json.dumps(prices)))
    upstream.set_default(Reply(tokens=["a ", "b ", "c "]))
    conversation_id, answer_id = answered(chat, "one two three four")
    chat.wait(chat.send(conversation_id, "five six"))
    with chat.app.app_context():
        answers = db.session.query(Message).filter_by(conversation_id=conversation_id, role="assistant").all()
        costs = [(m.prompt_tokens * 2000 + m.completion_tokens * 10000) / 1e6 for m in answers]
        first = answers[0]
        tokens = (first.prompt_tokens, first.completion_tokens)
    page = page_of(chat, conversation_id)
    assert f"{tokens[0]} + {tokens[1]} tokens" in page
    assert re.search(rf'<span class="cost" title="What this answer cost [^"]+">\${costs[0]:.3f}</span>', page)
    assert f"${sum(costs):.3f} so far" in page

    api = ApiClient(chat.app)
    with chat.app.app_context():
        from chatapp.models import ApiToken

        row, token = ApiToken.issue(db.session.get(Message, answer_id).conversation.user_id, "t")
        db.session.add(row)
        db.session.commit()
    api = ApiClient(chat.app, token)
    assert api.call("GET", f"/messages/{answer_id}").get_json()["cost"] == pytest.approx(costs[0])


def test_no_cost_when_the_price_is_unknown_and_the_kept_table_offline(make_app, upstream) -> None:  # noqa: ANN001
    chat = Chat(make_app())  # fake-model is in no price table
    conversation_id, answer_id = answered(chat)
    page = page_of(chat, conversation_id)
    assert 'class="cost"' not in page and "so far" not in page
    assert ApiClient(chat.app).call("GET", f"/messages/{answer_id}").status_code == 404  # another identity
    from chatapp.prices import cost

    with chat.app.app_context():  # a server of one's own (here the fake upstream): in no price table
        assert cost("fake-model", "openai", 10, 10) is None
        assert cost("gpt-4o-mini", "openai", 1_000_000, 1_000_000) is None
    # The genai-prices table, bundled in the package, for the provider at OPENAI_BASE_URL (OpenAI when unset):
    # a known model has a price, without any network.
    for base_url in ("https://api.openai.com/v1", "https://openrouter.ai/api/v1"):
        with make_app(OPENAI_BASE_URL=base_url).app_context():
            model = "gpt-4o-mini" if "openai.com" in base_url else "openai/gpt-4o-mini"
            known = cost(model, "openai", 1_000_000, 1_000_000)
            assert known is not None and 0.1 < known < 10, (base_url, known)
            assert cost("gpt-4o-mini", "local", 1_000_000, 1_000_000) is None


def test_bad_model_prices_stop_the_start_with_what_to_write(make_app) -> None:  # noqa: ANN001
    from chatapp.config import ConfigError

    with pytest.raises(ConfigError, match="MODEL_PRICES"):
        make_app(MODEL_PRICES='{"m": {"in": 1}}')
    with pytest.raises(ConfigError, match="not valid JSON"):
        make_app(MODEL_PRICES="{nope")


# ---- PostgreSQL ---------------------------------------------------------------------------------------


@pytest.mark.postgres
def test_presets_meter_cost_and_feedback_on_postgres(make_app, postgres_url: str, upstream) -> None:  # noqa: ANN001
    app = make_app(
        DATABASE_URL=postgres_url, ADMIN_USERS="root", MODEL_PRICES='{"other-model": {"input": 1, "output": 1}}'
    )
    chat = Chat(app)
    sign_up(chat, "alice")
    chat.post("/settings/presets", PRESET)
    with app.app_context():
        preset_id = db.session.query(Preset.id).scalar()
    response = chat.post("/conversations", {"content": "hi", "preset_id": str(preset_id)})
    conversation_id = int(re.search(r"/c/(\d+)", response.headers["Location"]).group(1))
    answer_id = int(response.headers["Location"].rsplit("message-", 1)[1])
    assert chat.wait(answer_id).model == "other-model"
    fragment = chat.post(f"/c/{conversation_id}/meter", {"content": "two words"}).get_data(as_text=True)
    assert meter_numbers(fragment)[0] == count_tokens("two words") and "so far" in fragment
    chat.post(f"/messages/{answer_id}/feedback", {"rating": "up", "comment": "Nice."})
    root = Chat(app)
    sign_up(root, "root")
    assert "alice Thumbs up Nice. other-model" in text(root.get("/admin"))
