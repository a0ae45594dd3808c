"""Notes, the side channel: the user's own notes (page and API), and the assistant's ``save_note`` tool.

The tool calls are streamed by the fake upstream in the real wire format (``delta.tool_calls`` in
pieces, ``finish_reason: "tool_calls"``), so the real openai client and the app's tool loop run.
"""

from __future__ import annotations

import json

import pytest

from chatapp import notes as notes_module
from chatapp.extensions import db
from chatapp.models import Note, Usage
from tests.clients import ApiClient, WebSocket, chromium, ndjson, serve, stored, wait_until
from tests.conftest import Chat
from tests.fake_upstream import Reply, save_note
from tests.sse import collect
from tests.test_page import check_accessible, open_context, send, wait_idle


@pytest.fixture(autouse=True)
def _forget_toolless() -> None:
    """Which models refused tools is remembered per process: each test starts afresh."""
    notes_module.forget_toolless()


def stored_notes(app, conversation_id: int) -> list[Note]:  # noqa: ANN001
    with app.app_context():
        found = list(db.session.scalars(db.select(Note).where(Note.conversation_id == conversation_id)))
        db.session.expunge_all()
        return found


def tool_round(content: str, before: list[str] | None = None, call_id: str = "call_note_1") -> Reply:
    """A round that writes ``before`` and then calls save_note(content)."""
    return Reply(tokens=before or [], tool_calls=[save_note(content, call_id)])


# -- the user's notes, on the page without JavaScript ------------------------------------------------
def test_notes_on_the_page_without_js(chat: Chat, upstream) -> None:  # noqa: ANN001
    conversation_id, answer_id = chat.start("hello there")
    chat.wait(answer_id)
    page = chat.get(f"/c/{conversation_id}").get_data(as_text=True)
    assert 'id="notes"' in page and "Save to notes" in page and '<details id="notes" class="notes-panel">' in page

    added = chat.post(f"/c/{conversation_id}/notes", {"content": "  Buy milk  "})
    assert added.status_code == 303 and "notes=1" in added.headers["Location"]
    page = chat.get(added.headers["Location"]).get_data(as_text=True)
    assert '<details id="notes" class="notes-panel" open>' in page and ">Buy milk<" in page
    note = stored_notes(chat.app, conversation_id)[0]
    assert (note.content, note.source, note.message_id) == ("Buy milk", "user", None)

    empty = chat.post(f"/c/{conversation_id}/notes", {"content": "   "})
    assert empty.status_code == 422 and "Type the note before saving it." in empty.get_data(as_text=True)
    too_long = "x" * (notes_module.MAX_NOTE_CHARS + 1)
    refused = chat.post(f"/c/{conversation_id}/notes", {"content": too_long})
    body = refused.get_data(as_text=True)
    assert refused.status_code == 413 and "the limit is 10,000" in body and too_long in body  # nothing typed is lost

    saved = chat.post(f"/messages/{answer_id}/save-note")
    assert saved.status_code == 303
    copied = [n for n in stored_notes(chat.app, conversation_id) if n.message_id == answer_id][0]
    assert copied.content == "Echo: hello there" and copied.source == "user"

    edited = chat.post(f"/notes/{note.id}/edit", {"content": "Buy oat milk"})
    assert edited.status_code == 303 and edited.headers["Location"].endswith(f"#note-{note.id}")
    bad_edit = chat.post(f"/notes/{note.id}/edit", {"content": ""})
    assert bad_edit.status_code == 422 and "Type the note before saving it." in bad_edit.get_data(as_text=True)
    assert [n.content for n in stored_notes(chat.app, conversation_id) if n.id == note.id] == ["Buy oat milk"]

    deleted = chat.post(f"/notes/{note.id}/delete")
    assert deleted.status_code == 303
    assert [n.id for n in stored_notes(chat.app, conversation_id)] == [copied.id]

    stranger = Chat(chat.app)
    for url in (f"/notes/{copied.id}/edit", f"/notes/{copied.id}/delete", f"/c/{conversation_id}/notes"):
        assert stranger.post(url, {"content": "mine now"}).status_code == 404
    assert [n.content for n in stored_notes(chat.app, conversation_id)] == ["Echo: hello there"]


def test_notes_over_htmx_swap_in_place(chat: Chat, upstream) -> None:  # noqa: ANN001
    conversation_id, answer_id = chat.start("hi")
    chat.wait(answer_id)
    hx = {"HX-Request": "true"}
    panel = chat.post(f"/c/{conversation_id}/notes", {"content": "first"}, headers=hx)
    html = panel.get_data(as_text=True)
    assert panel.status_code == 200 and html.lstrip().startswith("{#") is False and 'id="notes"' in html
    assert "open" in html.split(">", 1)[0] and ">first<" in html
    refused = chat.post(f"/c/{conversation_id}/notes", {"content": ""}, headers=hx)
    assert refused.status_code == 422 and 'aria-invalid="true"' in refused.get_data(as_text=True)
    note_id = stored_notes(chat.app, conversation_id)[0].id
    edited = chat.post(f"/notes/{note_id}/edit", {"content": "second"}, headers=hx).get_data(as_text=True)
    assert edited.lstrip().startswith(f'<li id="note-{note_id}"') and ">second<" in edited
    gone = chat.post(f"/notes/{note_id}/delete", headers=hx).get_data(as_text=True)
    assert 'id="notes-count"' in gone and 'hx-swap-oob="true"' in gone and ">0<" in gone


# -- the API -------------------------------------------------------------------------------------------
def test_notes_api_crud_errors_and_ownership(app, upstream) -> None:  # noqa: ANN001
    api = ApiClient(app)
    conversation = api.call("POST", "/conversations", {}).get_json()
    base = f"/conversations/{conversation['id']}/notes"
    assert api.call("GET", base).get_json() == {"items": []}
    created = api.call("POST", base, {"content": "remember this"})
    note = created.get_json()
    assert created.status_code == 201 and note["content"] == "remember this" and note["source"] == "user"
    assert note["created_at"].endswith("Z") and note["message_id"] is None and note["offset"] is None

    empty = api.call("POST", base, {"content": "  "})
    assert empty.status_code == 422 and empty.get_json()["error"]["message"] == "Type the note before saving it."
    assert api.call("POST", base, {"content": "x", "colour": "red"}).status_code == 422
    too_long = api.call("POST", base, {"content": "x" * (notes_module.MAX_NOTE_CHARS + 1)})
    assert too_long.status_code == 413 and too_long.get_json()["error"]["code"] == "too_large"  # as on the page
    assert api.call("POST", base, {"message_id": 999999}).status_code == 422

    sent = api.call("POST", f"/conversations/{conversation['id']}/messages", {"content": "hi there"}).get_json()
    wait_until(lambda: stored(app, sent["assistant_message"]["id"]).status == "complete", "the answer ends")
    copied = api.call("POST", base, {"message_id": sent["assistant_message"]["id"]}).get_json()
    assert copied["content"] == "Echo: hi there" and copied["message_id"] == sent["assistant_message"]["id"]

    patched = api.call("PATCH", f"/notes/{note['id']}", {"content": "changed"})
    assert patched.status_code == 200 and patched.get_json()["content"] == "changed"
    assert api.call("PATCH", f"/notes/{note['id']}", {"content": ""}).status_code == 422
    assert [n["content"] for n in api.call("GET", base).get_json()["items"]] == ["changed", "Echo: hi there"]

    other = ApiClient(app)
    assert other.call("GET", base).status_code == 404
    assert other.call("PATCH", f"/notes/{note['id']}", {"content": "mine"}).status_code == 404
    assert other.call("DELETE", f"/notes/{note['id']}").status_code == 404
    assert api.call("DELETE", f"/notes/{note['id']}").status_code == 204
    assert api.call("DELETE", f"/notes/{note['id']}").status_code == 404

    document = api.call("GET", "/openapi.json").get_json()
    assert {"get", "post"} <= set(document["paths"]["/api/v1/conversations/{conversation_id}/notes"])
    assert {"patch", "delete"} <= set(document["paths"]["/api/v1/notes/{note_id}"])
    assert "StreamNote" in document["components"]["schemas"]
    stream_events = document["paths"]["/api/v1/messages/{message_id}/stream"]["get"]["responses"]["200"]
    assert "note" in stream_events["content"]["text/event-stream"]["schema"]["properties"]["event"]["enum"]


# -- the tool ------------------------------------------------------------------------------------------
def test_tool_call_is_a_note_on_its_own_channel_and_the_answer_goes_on(app, upstream) -> None:  # noqa: ANN001
    api = ApiClient(app)
    conversation = api.call("POST", "/conversations", {}).get_json()
    upstream.script(
        tool_round("Lisbon: try the pastéis de nata", before=["Let me", " note that."]),
        Reply(tokens=[" Done", ", enjoy!"]),
    )
    stream = api.stream(
        "POST", f"/conversations/{conversation['id']}/messages", {"content": "ideas?"}, Accept="text/event-stream"
    )
    _, events = collect(stream)
    kinds = [e.event for e in events]
    notes_seen = [json.loads(e.data) for e in events if e.event == "note"]
    assert len(notes_seen) == 1 and notes_seen[0]["note"]["content"] == "Lisbon: try the pastéis de nata"
    assert notes_seen[0]["note"]["source"] == "assistant" and notes_seen[0]["conversation_id"] == conversation["id"]
    note_at = kinds.index("note")
    assert "delta" in kinds[:note_at] and "delta" in kinds[note_at:]  # the answer went on after the note
    final = json.loads(events[-1].data)
    assert final["content"] == "Let me note that. Done, enjoy!"  # no tool junk in the text
    assert "save_note" not in "".join(e.data for e in events if e.event == "delta")
    assert notes_seen[0]["note"]["offset"] == len("Let me note that.")

    # Two requests: the second carries the tool call and its result, after the first round's text.
    first, second = upstream.requests
    assert first["tools"][0]["function"]["name"] == "save_note"
    call, result = second["messages"][-2:]
    assert call["role"] == "assistant" and call["content"] == "Let me note that."
    assert call["tool_calls"][0]["id"] == "call_note_1"
    assert json.loads(call["tool_calls"][0]["function"]["arguments"]) == {"content": "Lisbon: try the pastéis de nata"}
    assert result == {"role": "tool", "tool_call_id": "call_note_1", "content": result["content"]}
    assert "Saved" in result["content"]

    # Usage counts both rounds, as the fake reports them: words of each prompt, one token a piece.
    def words(request: dict) -> int:
        return sum(len(str(m.get("content", "")).split()) for m in request["messages"])

    pieces = -(-len(save_note("Lisbon: try the pastéis de nata")["arguments"]) // 7)
    assert final["prompt_tokens"] == words(first) + words(second)
    assert final["completion_tokens"] == (2 + pieces) + 2
    with app.app_context():
        spent = db.session.scalars(db.select(Usage.tokens)).all()
    assert spent == [final["prompt_tokens"] + final["completion_tokens"]]

    # A later prompt replays the tool call and its result from the stored note, where it happened.
    upstream.script(Reply(tokens=["ok"]))
    api.call("POST", f"/conversations/{conversation['id']}/messages", {"content": "and then?"})
    later = upstream.wait_for_requests(3)[2]["messages"]
    roles = [m["role"] for m in later]
    assert roles[-5:] == ["user", "assistant", "tool", "assistant", "user"]
    assert later[-4]["tool_calls"][0]["id"] == "call_note_1" and later[-4]["content"] == "Let me note that."
    assert later[-3]["tool_call_id"] == "call_note_1" and later[-2]["content"] == " Done, enjoy!"


def test_tool_note_over_ndjson_and_websocket(app, upstream) -> None:  # noqa: ANN001
    api = ApiClient(app)
    conversation = api.call("POST", "/conversations", {}).get_json()
    upstream.script(tool_round("over ndjson"), Reply(tokens=["fine"]))
    lines = list(
        ndjson(
            api.stream(
                "POST",
                f"/conversations/{conversation['id']}/messages",
                {"content": "go"},
                Accept="application/x-ndjson",
            )
        )
    )
    noted = [line for line in lines if line["type"] == "note"]
    assert len(noted) == 1 and noted[0]["note"]["content"] == "over ndjson" and lines[-1]["type"] == "done"
    assert lines[-1]["message"]["content"] == "fine"

    upstream.script(tool_round("over the socket", before=["Noted"]), Reply(tokens=[" and done."]))
    with serve(app) as base_url:
        socket = WebSocket(base_url, api.token)
        try:
            socket.send(type="send_message", request_id="r1", conversation_id=conversation["id"], content="again")
            done = socket.until(lambda m: m["type"] == "done")
        finally:
            socket.close()
    note = next(m for m in socket.received if m["type"] == "note")
    assert note["request_id"] == "r1" and note["conversation_id"] == conversation["id"]
    assert note["message_id"] == done["message"]["id"] and note["note"]["content"] == "over the socket"
    assert done["message"]["content"] == "Noted and done."
    assert "save_note" not in "".join(m.get("content", "") for m in socket.received if m["type"] == "chunk")


def test_stop_during_the_second_round_stops_the_whole_answer(app, upstream) -> None:  # noqa: ANN001
    api = ApiClient(app)
    conversation = api.call("POST", "/conversations", {}).get_json()
    second = Reply(tokens=[" one", " two", " three", " four"], pause_after=2)
    upstream.script(tool_round("kept", before=["Start."]), second)
    sent = api.call("POST", f"/conversations/{conversation['id']}/messages", {"content": "go"}).get_json()
    answer_id = sent["assistant_message"]["id"]
    wait_until(lambda: stored(app, answer_id).content == "Start. one two" or None, "the second round writes", 10)
    stopped = api.call("POST", f"/messages/{answer_id}/stop").get_json()
    second.resume.set()
    assert stopped["status"] == "stopped" and stopped["content"] == "Start. one two"
    assert len(upstream.requests) == 2  # no third round
    assert [n.content for n in stored_notes(app, conversation["id"])] == ["kept"]
    assert stored(app, answer_id).content == "Start. one two"


def test_rounds_are_bounded(make_app, upstream) -> None:  # noqa: ANN001
    app = make_app(NOTES_TOOL_ROUNDS=2)
    api = ApiClient(app)
    conversation = api.call("POST", "/conversations", {}).get_json()
    upstream.script(tool_round("a", call_id="c1"), tool_round("b", call_id="c2"), Reply(tokens=["text at last"]))
    sent = api.call("POST", f"/conversations/{conversation['id']}/messages", {"content": "go"}).get_json()
    answer = wait_until(lambda: (m := stored(app, sent["assistant_message"]["id"])).status != "streaming" and m, "end")
    assert answer.content == "text at last" and answer.status == "complete"
    requests = upstream.requests
    assert [bool(r.get("tools")) for r in requests] == [True, True, False]  # the last round offers no tool
    assert not any(m["role"] == "tool" for m in requests[2]["messages"])  # nor shows tool messages it cannot read
    assert [n.content for n in stored_notes(app, conversation["id"])] == ["a", "b"]


def test_auto_mode_asks_again_without_tools_and_remembers(app, upstream) -> None:  # noqa: ANN001
    upstream.refuse_tools = True
    api = ApiClient(app)
    conversation = api.call("POST", "/conversations", {}).get_json()
    sent = api.call("POST", f"/conversations/{conversation['id']}/messages", {"content": "hi"}).get_json()
    answer = wait_until(lambda: (m := stored(app, sent["assistant_message"]["id"])).status != "streaming" and m, "end")
    assert answer.status == "complete" and answer.content == "Echo: hi"
    assert [bool(r.get("tools")) for r in upstream.requests] == [True, False]
    sent = api.call("POST", f"/conversations/{conversation['id']}/messages", {"content": "again"}).get_json()
    wait_until(lambda: stored(app, sent["assistant_message"]["id"]).status == "complete", "the second answer ends")
    assert [bool(r.get("tools")) for r in upstream.requests] == [True, False, False]  # remembered: asked once
    assert api.call("POST", f"/conversations/{conversation['id']}/notes", {"content": "by hand"}).status_code == 201


def test_on_mode_reports_the_refusal_and_off_mode_sends_no_tool(make_app, upstream) -> None:  # noqa: ANN001
    upstream.refuse_tools = True
    api = ApiClient(make_app(NOTES_TOOL="on"))
    conversation = api.call("POST", "/conversations", {}).get_json()
    sent = api.call("POST", f"/conversations/{conversation['id']}/messages", {"content": "hi"}).get_json()
    answer = wait_until(
        lambda: (m := stored(api.app, sent["assistant_message"]["id"])).status != "streaming" and m, "end"
    )
    assert answer.status == "error" and "400" in answer.error
    upstream.reset()
    api = ApiClient(make_app(NOTES_TOOL="off"))
    conversation = api.call("POST", "/conversations", {}).get_json()
    sent = api.call("POST", f"/conversations/{conversation['id']}/messages", {"content": "hi"}).get_json()
    wait_until(lambda: stored(api.app, sent["assistant_message"]["id"]).status == "complete", "the answer ends")
    assert "tools" not in upstream.requests[0]


# -- the page, in Chromium -----------------------------------------------------------------------------
def test_page_panel_gets_the_note_while_the_answer_continues(app, upstream, live_server) -> None:  # noqa: ANN001
    second = Reply(tokens=[" and", " the", " rest", "."], pause_after=1)
    upstream.script(tool_round("A note from the model", before=["First"]), second)
    with chromium() as browser:
        context = open_context(browser, live_server)
        page = context.new_page()
        page.goto("/")
        send(page, "hello")
        page.wait_for_selector("article.assistant[data-status=streaming]")
        page.click("#notes > summary")
        page.wait_for_selector("#notes-list li.note.assistant")  # in the panel before the answer ends
        assert page.locator("article.assistant[data-status=streaming]").count() == 1
        assert "A note from the model" in page.inner_text("#notes-list")
        assert page.text_content("#notes-count").strip() == "(1)"  # "(1)" to a screen reader, 1 to the eye
        second.resume.set()
        wait_idle(page)
        text = page.inner_text("article.assistant .content")
        assert text.strip() == "First and the rest." and "save_note" not in text
        assert page.locator("#notes-list li").count() == 1  # once, though the page's stream may replay it

        page.fill("#note-new", "My own note")
        page.click(".note-add button[type=submit]")
        page.wait_for_selector("#notes-list li.note.user")
        page.click("article.assistant .save-note")
        page.wait_for_function("document.querySelectorAll('#notes-list li').length === 3")
        page.wait_for_function("document.getElementById('announcer').textContent === 'Saved to notes'")
        check_accessible(page, "notes panel open")
        context.close()


def test_page_stream_that_starts_after_the_answer_ended_still_brings_its_notes(chat: Chat, upstream) -> None:  # noqa: ANN001
    upstream.script(tool_round("quick note"), Reply(tokens=["quick answer"]))
    conversation_id, answer_id = chat.start("fast")
    assert chat.wait(answer_id).content == "quick answer"
    _, events = collect(chat.events(answer_id))
    done = events[-1]
    assert done.event == "done" and 'hx-swap-oob="beforeend:#notes-list"' in done.data and "quick note" in done.data
    assert "quick note" not in chat.wait(answer_id).content


def test_notes_reach_followers_in_another_worker(make_app, upstream, redis_url, redis_prefix) -> None:  # noqa: ANN001
    """With Redis, an API follower in another process gets the note event too (two apps stand for two workers)."""
    config = {"REDIS_URL": redis_url, "REDIS_PREFIX": redis_prefix}
    writer, reader = make_app(**config), make_app(**config)
    second = Reply(tokens=[" after"], pause_after=0)
    upstream.script(tool_round("across workers", before=["before"]), second)
    api = ApiClient(writer)
    conversation = api.call("POST", "/conversations", {}).get_json()
    sent = api.call("POST", f"/conversations/{conversation['id']}/messages", {"content": "go"}).get_json()
    follower = ApiClient(reader, api.token)
    stream = follower.stream("GET", f"/messages/{sent['assistant_message']['id']}/stream")
    upstream.wait_for_requests(2)
    second.resume.set()
    _, events = collect(stream)
    noted = [json.loads(e.data) for e in events if e.event == "note"]
    assert [n["note"]["content"] for n in noted] == ["across workers"]
    assert json.loads(events[-1].data)["content"] == "before after"


def test_notes_on_postgresql(make_app, upstream, postgres_url) -> None:  # noqa: ANN001
    """The migration and the notes, tool and all, on PostgreSQL; a deleted conversation takes its notes along."""
    app = make_app(DATABASE_URL=postgres_url)
    api = ApiClient(app)
    conversation = api.call("POST", "/conversations", {}).get_json()
    upstream.script(tool_round("on postgres"), Reply(tokens=["ok"]))
    sent = api.call("POST", f"/conversations/{conversation['id']}/messages", {"content": "go"}).get_json()
    wait_until(lambda: stored(app, sent["assistant_message"]["id"]).status == "complete", "the answer ends")
    assert api.call("POST", f"/conversations/{conversation['id']}/notes", {"content": "mine"}).status_code == 201
    listed = api.call("GET", f"/conversations/{conversation['id']}/notes").get_json()["items"]
    assert [(n["content"], n["source"]) for n in listed] == [("on postgres", "assistant"), ("mine", "user")]
    assert api.call("DELETE", f"/conversations/{conversation['id']}").status_code == 204
    assert stored_notes(app, conversation["id"]) == []


def test_panel_in_chromium_without_javascript(app, upstream, live_server) -> None:  # noqa: ANN001
    """A phone with JavaScript off: the panel opens as a <details>; add, edit, delete, save a message."""
    with chromium() as browser:
        context = open_context(browser, live_server, java_script_enabled=False, viewport={"width": 390, "height": 700})
        page = context.new_page()
        page.goto("/")
        page.fill("#content", "plain page")
        page.click("#composer-actions .send")
        page.wait_for_selector('article.assistant[data-status="complete"]')
        assert not page.locator("#note-new").is_visible()  # folded until opened
        page.click("#notes > summary")
        page.fill("#note-new", "written without JS")
        page.click(".note-add button[type=submit]")
        page.wait_for_selector("#notes[open] #notes-list li.note.user")  # back with the panel open
        assert "written without JS" in page.inner_text("#notes-list")
        page.click(".note-add button[type=submit]")  # empty: refused, said beside the box
        page.wait_for_selector("#note-new-error")
        assert page.get_attribute("#note-new", "aria-invalid") == "true"
        page.click("#notes-list li .note-edit > summary")
        page.fill("#notes-list li .note-edit textarea", "edited without JS")
        page.click("#notes-list li .note-edit button[type=submit]")
        page.wait_for_function("document.querySelector('#notes-list').textContent.includes('edited without JS')")
        page.click("#notes > summary")  # on a phone the open panel covers the messages: fold it first
        page.click("article.assistant .save-note")
        page.wait_for_function("document.querySelectorAll('#notes-list li').length === 2")
        assert "Echo: plain page" in page.inner_text("#notes-list")
        page.click("#notes-list li.note.user >> nth=0 >> .note-actions button.danger")
        page.wait_for_function("document.querySelectorAll('#notes-list li').length === 1")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        context.close()


def test_panel_edit_and_delete_in_place_with_htmx(app, upstream, live_server) -> None:  # noqa: ANN001
    with chromium() as browser:
        context = open_context(browser, live_server)
        page = context.new_page()
        page.goto("/")
        send(page, "in place")
        wait_idle(page)
        page.click("#notes > summary")
        page.fill("#note-new", "to change")
        page.click(".note-add button[type=submit]")
        page.wait_for_selector("#notes-list li.note.user")
        page.wait_for_function("document.activeElement && document.activeElement.id === 'note-new'")  # focus kept
        url = page.url
        page.click("#notes-list li .note-edit > summary")
        page.fill("#notes-list li .note-edit textarea", "")
        page.click("#notes-list li .note-edit button[type=submit]")
        page.wait_for_selector("#notes-list li .error")  # refused in place; the panel stays open
        page.fill("#notes-list li .note-edit textarea", "changed in place")
        page.click("#notes-list li .note-edit button[type=submit]")
        page.wait_for_function("document.querySelector('#notes-list li .note-text').textContent === 'changed in place'")
        assert page.locator("#notes[open]").count() == 1 and page.url == url  # no navigation
        page.click("#notes-list li .note-actions button.danger")
        page.wait_for_function("document.querySelectorAll('#notes-list li').length === 0")
        page.wait_for_function("document.activeElement && document.activeElement.id === 'note-new'")
        assert page.text_content("#notes-count").strip() == "(0)"
        context.close()


def test_a_malformed_tool_call_saves_nothing_and_the_model_is_told(app, upstream) -> None:  # noqa: ANN001
    api = ApiClient(app)
    conversation = api.call("POST", "/conversations", {}).get_json()
    broken = {"name": "save_note", "arguments": '{"content": ', "id": "call_bad"}
    upstream.script(Reply(tokens=[], tool_calls=[broken]), Reply(tokens=["sorry"]))
    sent = api.call("POST", f"/conversations/{conversation['id']}/messages", {"content": "go"}).get_json()
    answer = wait_until(lambda: (m := stored(app, sent["assistant_message"]["id"])).status != "streaming" and m, "end")
    assert answer.status == "complete" and answer.content == "sorry"
    assert stored_notes(app, conversation["id"]) == []
    result = upstream.requests[1]["messages"][-1]
    assert result["role"] == "tool" and result["tool_call_id"] == "call_bad" and "Not saved" in result["content"]


def test_the_local_model_never_gets_the_tool() -> None:
    """Whatever NOTES_TOOL says; and a prompt for a model without the tool keeps the text, not the calls."""
    assert not any(notes_module.offers_tool(mode, "local", "local", "smol") for mode in ("auto", "on", "off"))
    assert notes_module.offers_tool("on", "http://x", "openai", "m") and not notes_module.offers_tool(
        "off", "http://x", "openai", "m"
    )
    call = {"id": "c1", "type": "function", "function": {"name": "save_note", "arguments": "{}"}}
    prompt = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Saving.", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "Saved."},
        {"role": "assistant", "content": " Done."},
        {"role": "user", "content": "next"},
    ]
    assert notes_module.without_tools(prompt) == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Saving. Done."},
        {"role": "user", "content": "next"},
    ]


def test_two_tool_calls_in_one_round_are_two_notes(app, upstream) -> None:  # noqa: ANN001
    api = ApiClient(app)
    conversation = api.call("POST", "/conversations", {}).get_json()
    both = Reply(tokens=["Two:"], tool_calls=[save_note("first", "call_a"), save_note("second", "call_b")])
    upstream.script(both, Reply(tokens=[" saved."]))
    stream = api.stream(
        "POST", f"/conversations/{conversation['id']}/messages", {"content": "two"}, Accept="application/x-ndjson"
    )
    lines = list(ndjson(stream))
    assert [line["note"]["content"] for line in lines if line["type"] == "note"] == ["first", "second"]
    assert lines[-1]["message"]["content"] == "Two: saved."
    call, first, second = upstream.requests[1]["messages"][-3:]
    assert [c["id"] for c in call["tool_calls"]] == ["call_a", "call_b"]
    assert (first["tool_call_id"], second["tool_call_id"]) == ("call_a", "call_b")
