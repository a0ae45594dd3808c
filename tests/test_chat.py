"""The chat loop: send, stream, persist, budgets, errors, stop, resume, reload."""

from __future__ import annotations

import re
import threading
import time

from chatapp.conversations import STOP_WAIT
from chatapp.extensions import db
from chatapp.models import Message
from chatapp.rendering import markdown_html
from chatapp.tokens import PER_MESSAGE_OVERHEAD, count_tokens
from tests.clients import stored, wait_until
from tests.conftest import Chat, wait_for_status
from tests.fake_upstream import Reply
from tests.sse import collect, parse, visible_text

WORDS = [f" w{i}" for i in range(60)]


def events_of(chat: Chat, message_id: int, **headers: str):  # noqa: ANN201
    response = chat.events(message_id, **headers)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Accel-Buffering"] == "no"
    return response


def test_answer_streams_and_is_stored(chat: Chat, upstream) -> None:  # noqa: ANN001
    upstream.set_default(Reply(delay=0.05))  # slow enough that the viewer joins while it streams
    conversation_id, answer_id = chat.start("hello there")
    response = events_of(chat, answer_id)
    chunks = iter(response)
    first = next(chunks)
    assert first.startswith(b": ping")
    shown, events = collect(chunks)
    assert shown.updates and shown.text == "Echo: hello there"
    assert events[-1].event == "done"
    assert 'data-status="complete"' in events[-1].data
    assert "<p>Echo: hello there</p>" in events[-1].data
    # Every update carries an id: the character offset of the text it shows, rendered.
    for update in (e for e in events if e.event == "tail"):
        assert "<p>" in update.data
        assert visible_text(update.data) == visible_text(markdown_html("Echo: hello there"[: int(update.id)]))

    sent = upstream.requests[0]
    assert sent["stream"] is True
    assert sent["messages"][0]["role"] == "system"
    assert sent["messages"][-1] == {"role": "user", "content": "hello there"}

    page = chat.get(f"/c/{conversation_id}").get_data(as_text=True)
    assert "<p>Echo: hello there</p>" in page
    assert "fake-model" in page


def test_answer_records_model_timing_and_usage(chat: Chat, upstream) -> None:  # noqa: ANN001
    upstream.script(Reply(tokens=["one", " two", " three"], first_delay=0.05))
    _, answer_id = chat.start("count")
    message = chat.wait(answer_id)
    assert message.status == "complete"
    assert (message.model, message.provider) == ("fake-model", "openai")
    assert message.ttft_ms >= 50
    assert message.duration_ms >= message.ttft_ms
    assert message.completion_tokens == 3  # from the upstream's usage chunk
    assert message.prompt_tokens > 0
    assert message.finish_reason == "stop"
    page = chat.get(f"/c/{message.conversation_id}").get_data(as_text=True)
    assert "first token" in page and "3 tokens" in page


def test_usage_counted_when_upstream_sends_none(chat: Chat, upstream) -> None:  # noqa: ANN001
    upstream.script(Reply(tokens=["alpha", " beta"], usage=False))
    _, answer_id = chat.start("x")
    message = chat.wait(answer_id)
    assert message.completion_tokens == 2  # counted with tiktoken
    assert message.prompt_tokens > 0


def test_conversation_survives_restart(make_app, chat: Chat) -> None:  # noqa: ANN001
    conversation_id, answer_id = chat.start("remember me")
    assert chat.wait(answer_id).status == "complete"
    restarted = Chat(make_app())
    restarted.client.set_cookie("session", chat.client.get_cookie("session").value)
    page = restarted.get(f"/c/{conversation_id}").get_data(as_text=True)
    assert "remember me" in page and "<p>Echo: remember me</p>" in page


def test_too_long_message_is_saved_not_sent(make_app, upstream) -> None:  # noqa: ANN001
    chat = Chat(make_app(MAX_USER_MESSAGE_TOKENS=10))
    conversation_id, first_answer = chat.start("short question")
    chat.wait(first_answer)
    long_text = "word " * 40
    response = chat.post(f"/c/{conversation_id}/messages", {"content": long_text})
    # Post-redirect-get: the address bar holds the conversation's URL, and its page the refused text.
    assert response.status_code == 303
    assert response.headers["Location"] == f"/c/{conversation_id}#composer"
    page = chat.get(f"/c/{conversation_id}").get_data(as_text=True)
    assert "40 tokens long; the limit is 10" in page.split('id="composer-error"', 1)[1]  # beside the composer
    assert long_text.strip() in page.split('id="content"', 1)[1]  # still in the composer, to edit
    assert len(upstream.requests) == 1  # only the first question went upstream
    with chat.app.app_context():
        refused = db.session.scalars(db.select(Message).filter_by(content=long_text.strip())).one()
        assert refused.status == "error"

    # The shortened message takes its place and is answered.
    answer_id = chat.send(conversation_id, "shorter")
    assert chat.wait(answer_id).content == "Echo: shorter"
    page = chat.get(f"/c/{conversation_id}").get_data(as_text=True)
    assert "tokens long" not in page
    assert [m["content"] for m in upstream.requests[-1]["messages"] if m["role"] == "user"] == [
        "short question",
        "shorter",
    ]


def test_history_is_trimmed_oldest_first(make_app, upstream) -> None:  # noqa: ANN001
    budget = 60
    chat = Chat(make_app(MAX_HISTORY_TOKENS=budget, SYSTEM_PROMPT="Be brief."))
    questions = [
        "first question about apples",
        "second question about pears",
        "third question about plums",
        "fourth question about figs",
    ]
    conversation_id, answer_id = chat.start(questions[0])
    chat.wait(answer_id)
    for question in questions[1:]:
        chat.wait(chat.send(conversation_id, question))
    sent = upstream.requests[-1]["messages"]
    conversation = [
        m for q in questions for m in ({"role": "user", "content": q}, {"role": "assistant", "content": f"Echo: {q}"})
    ][:-1]

    # The system prompt and the newest message are always kept; what is between them is the newest
    # contiguous run of the conversation, as long as it fits: one more older message would not.
    assert sent[0] == {"role": "system", "content": "Be brief."}
    assert sent[-1] == conversation[-1] == {"role": "user", "content": "fourth question about figs"}
    kept = sent[1:]
    assert 1 < len(kept) < len(conversation), "something was trimmed, and not everything"
    assert kept == conversation[-len(kept) :]

    def cost(messages: list[dict]) -> int:
        return sum(count_tokens(m["content"]) + PER_MESSAGE_OVERHEAD for m in messages)

    assert cost(sent) <= budget
    assert cost(sent) + cost([conversation[-len(kept) - 1]]) > budget


def test_newest_message_kept_even_if_history_budget_is_tiny(make_app, upstream) -> None:  # noqa: ANN001
    chat = Chat(make_app(MAX_HISTORY_TOKENS=5))
    conversation_id, answer_id = chat.start("one two three four five six seven")
    chat.wait(answer_id)
    chat.wait(chat.send(conversation_id, "eight nine ten"))
    roles = [m["role"] for m in upstream.requests[-1]["messages"]]
    assert roles == ["system", "user"]


def test_response_is_capped(make_app, upstream) -> None:  # noqa: ANN001
    chat = Chat(make_app(MAX_RESPONSE_TOKENS=3))
    _, answer_id = chat.start("a b c d e f g")
    message = chat.wait(answer_id)
    assert upstream.requests[0]["max_tokens"] == 3
    assert message.content == "Echo: a"
    assert message.finish_reason == "length"


def test_upstream_errors_show_reason_and_retry_works(chat: Chat, upstream) -> None:  # noqa: ANN001
    cases = [
        (401, "rejected the API key"),
        (404, "was not found"),
        (429, "rate limiting"),
        (503, "had an error (503)"),
    ]
    conversation_id = None
    for status, reason in cases:
        upstream.script(Reply(status=status, error_message="nope"))
        if conversation_id is None:
            conversation_id, answer_id = chat.start("hi")
        else:
            answer_id = chat.send(conversation_id, "hi")
        message = chat.wait(answer_id)
        assert message.status == "error"
        assert reason in message.error
        page = chat.get(f"/c/{conversation_id}").get_data(as_text=True)
        assert f'id="message-{answer_id}" class="message assistant" data-status="error"' in page
        assert reason in page and f"/messages/{answer_id}/retry" in page

    response = chat.post(f"/messages/{answer_id}/retry")
    assert response.status_code == 303
    retried = chat.latest_answer(conversation_id)
    assert retried != answer_id
    assert chat.wait(retried).content == "Echo: hi"


def test_upstream_timeout_is_an_error(make_app, upstream) -> None:  # noqa: ANN001
    chat = Chat(make_app(UPSTREAM_TIMEOUT=0.5))
    upstream.script(Reply(hang=True))
    _, answer_id = chat.start("hello")
    message = chat.wait(answer_id)
    assert message.status == "error"
    assert "sent nothing for 0.5 seconds" in message.error


def test_unreachable_upstream_is_an_error(make_app) -> None:  # noqa: ANN001
    chat = Chat(make_app(OPENAI_BASE_URL="http://127.0.0.1:9/v1"))
    _, answer_id = chat.start("hello")
    message = chat.wait(answer_id)
    assert message.status == "error"
    assert "Could not connect" in message.error


def test_dropped_stream_keeps_partial_text(chat: Chat, upstream) -> None:  # noqa: ANN001
    upstream.script(Reply(tokens=["a", "b", "c", "d", "e"], drop_after=3, delay=0.01))
    _, answer_id = chat.start("hello")
    message = chat.wait(answer_id)
    assert message.status == "error"
    assert message.content == "abc"
    assert "dropped" in message.error


def test_stop_keeps_exactly_the_streamed_text(chat: Chat, upstream) -> None:  # noqa: ANN001
    upstream.script(Reply(tokens=WORDS, delay=0.03))
    conversation_id, answer_id = chat.start("talk")
    page = chat.get(f"/c/{conversation_id}").get_data(as_text=True)
    assert f'action="/messages/{answer_id}/stop"' in page  # Stop replaces Send while streaming
    stream = events_of(chat, answer_id)
    shown, _ = collect(stream, stop_after=3)

    started = time.monotonic()
    response = chat.post(f"/messages/{answer_id}/stop")
    took = time.monotonic() - started
    assert response.status_code == 303
    # Stop waits up to STOP_WAIT (1 s) for the generator before its fallback: returning well inside it
    # shows the generator itself stopped. The README's 250 ms is measured in bench/; a busy 2-core
    # machine running the suite cannot promise it, but 1 s is 20 times what a stop takes here.
    assert took < STOP_WAIT
    message = chat.wait(answer_id)
    assert message.status == "stopped"

    shown, events = collect(stream, page=shown)  # what was published before the stop, then done
    assert events[-1].event == "done" and 'data-status="stopped"' in events[-1].data
    assert shown.offset <= len(message.content)  # nothing was shown that is not kept
    assert shown.text == " ".join(message.content.split())  # and the page ends showing exactly that
    assert 0 < len(message.content) < len("".join(WORDS))
    generating = f"gen-{answer_id}"  # the answer's generation thread, still reading the upstream when stopped
    wait_until(lambda: generating not in {t.name for t in threading.enumerate()}, "the generation thread ended")
    assert chat.wait(answer_id).content == message.content  # nothing more was written
    page = chat.get(f"/c/{conversation_id}").get_data(as_text=True)
    assert "Stopped." in page and 'class="send"' in page


def test_resume_with_last_event_id(chat: Chat, upstream) -> None:  # noqa: ANN001
    upstream.script(Reply(tokens=WORDS[:30], delay=0.02))
    _, answer_id = chat.start("go")
    page, events = collect(events_of(chat, answer_id), stop_after=4)
    last_id = [e.id for e in events if e.event == "tail"][-1]
    rendered = visible_text(markdown_html("".join(WORDS)[: page.offset]))
    assert last_id == str(page.offset) and visible_text(page.blocks + page.tail) == rendered
    assert page.text.startswith(rendered)  # and the words that came after the last render
    page, events = collect(events_of(chat, answer_id, **{"Last-Event-ID": last_id}), page=page)
    assert all(int(e.id) > int(last_id) for e in events if e.event == "tail")  # only what the page lacks
    assert visible_text(page.blocks + page.tail) == visible_text(markdown_html("".join(WORDS)[: page.offset]))
    assert events[-1].event == "done" and page.text == "".join(WORDS[:30]).strip()


def test_reload_reattaches_to_answer_in_progress(chat: Chat, upstream) -> None:  # noqa: ANN001
    reply = Reply(tokens=WORDS[:40], delay=0.01, pause_after=10)  # still being written while the page loads
    upstream.script(reply)
    conversation_id, answer_id = chat.start("go")
    wait_until(lambda: stored(chat.app, answer_id).content, "a flush stored part of the answer")
    page = chat.get(f"/c/{conversation_id}").get_data(as_text=True)
    assert f'id="message-{answer_id}" class="message assistant" data-status="streaming"' in page
    reply.resume.set()
    after = int(re.search(rf'sse-connect="/messages/{answer_id}/events\?after=(\d+)"', page).group(1))
    assert after, "the page shows the text generated so far"
    tail = page.split('<div class="tail" sse-swap="tail" hx-swap="innerHTML">', 1)[1].split("</div>", 1)[0]
    assert visible_text(tail) == visible_text(markdown_html("".join(WORDS)[:after]))  # formatted
    rest, events = collect(chat.events(answer_id, f"?after={after}"))
    assert all(int(e.id) > after for e in events if e.event == "tail")
    assert rest.text == "".join(WORDS[:40]).strip()


def test_finished_answer_sends_final_event_at_once(chat: Chat) -> None:
    _, answer_id = chat.start("hi")
    chat.wait(answer_id)
    events = [e for e in parse(events_of(chat, answer_id)) if not isinstance(e, str)]
    assert [e.event for e in events] == ["done"]
    assert "Echo: hi" in events[0].data


def test_second_conversation_and_sidebar(chat: Chat) -> None:
    first, answer = chat.start("apples are red")
    chat.wait(answer)
    second, answer = chat.start("bananas are yellow")
    chat.wait(answer)
    page = chat.get(f"/c/{first}").get_data(as_text=True)
    sidebar = page.split('id="sidebar"', 1)[1].split("</nav>", 1)[0]
    assert sidebar.index("bananas are yellow") < sidebar.index("apples are red")  # newest first
    assert "Echo: bananas" not in page  # only this conversation's messages


def test_rename_and_delete(chat: Chat) -> None:
    conversation_id, answer_id = chat.start("a title from the first message")
    chat.wait(answer_id)
    assert "<title>a title from the first message · chatapp</title>" in chat.get(f"/c/{conversation_id}").get_data(
        as_text=True
    )
    assert chat.post(f"/c/{conversation_id}/rename", {"title": "  Renamed   chat "}).status_code == 303
    assert "<title>Renamed chat · chatapp</title>" in chat.get(f"/c/{conversation_id}").get_data(as_text=True)
    assert chat.post(f"/c/{conversation_id}/rename", {"title": "   "}).status_code == 422

    confirm = chat.get(f"/c/{conversation_id}/delete").get_data(as_text=True)
    assert "Delete “Renamed chat”?" in confirm and 'method="post"' in confirm
    assert chat.post(f"/c/{conversation_id}/delete").status_code == 303
    assert chat.get(f"/c/{conversation_id}").status_code == 404
    with chat.app.app_context():
        assert db.session.scalar(db.select(db.func.count(Message.id))) == 0


def test_long_first_message_title_is_shortened(chat: Chat) -> None:
    conversation_id, _ = chat.start("Explain in detail how the northern lights form and why they have such colours")
    page = chat.get(f"/c/{conversation_id}").get_data(as_text=True)
    assert "<title>Explain in detail how the northern lights form and why they…" in page


def test_empty_message_is_refused(chat: Chat, upstream) -> None:  # noqa: ANN001
    response = chat.post("/conversations", {"content": "   "})
    assert response.status_code == 422
    assert "Type a message" in response.get_data(as_text=True)
    assert upstream.requests == []


def test_send_while_streaming_is_refused_and_text_kept(chat: Chat, upstream) -> None:  # noqa: ANN001
    upstream.script(Reply(tokens=WORDS, delay=0.05))
    conversation_id, answer_id = chat.start("long one")
    response = chat.post(f"/c/{conversation_id}/messages", {"content": "my next question"})
    assert response.status_code == 409
    page = response.get_data(as_text=True)
    assert "still being written" in page and "my next question" in page
    chat.post(f"/messages/{answer_id}/stop")


def test_other_identity_gets_404(app, chat: Chat) -> None:  # noqa: ANN001
    conversation_id, answer_id = chat.start("private")
    chat.wait(answer_id)
    stranger = Chat(app)
    assert stranger.get(f"/c/{conversation_id}").status_code == 404
    assert stranger.get(f"/messages/{answer_id}/events").status_code == 404
    assert stranger.post(f"/messages/{answer_id}/stop").status_code == 404
    assert stranger.post(f"/messages/{answer_id}/retry").status_code == 404
    assert stranger.post(f"/c/{conversation_id}/messages", {"content": "hi"}).status_code == 404
    assert stranger.post(f"/c/{conversation_id}/delete").status_code == 404
    assert "private" not in stranger.get("/").get_data(as_text=True)


def test_csrf_token_is_required(chat: Chat, upstream) -> None:  # noqa: ANN001
    chat.get("/")
    response = chat.client.post("/conversations", data={"content": "no token"})
    assert response.status_code == 400
    assert "security token" in response.get_data(as_text=True)
    assert "no token" in response.get_data(as_text=True)  # the text is offered back
    response = chat.client.post("/conversations", data={"content": "x"}, headers={"X-CSRF-Token": "wrong"})
    assert response.status_code == 400
    assert upstream.requests == []


def test_htmx_send_returns_fragments(chat: Chat, upstream) -> None:  # noqa: ANN001
    conversation_id, answer_id = chat.start("first")
    chat.wait(answer_id)
    upstream.script(Reply(tokens=["Echo:", " second"], first_delay=1.0))  # still being written when it answers
    response = chat.client.post(
        f"/c/{conversation_id}/messages",
        data={"content": "second"},
        headers={"HX-Request": "true", "X-CSRF-Token": chat.token},
    )
    assert response.status_code == 200
    assert "HX-Request" in response.headers["Vary"]
    html = response.get_data(as_text=True)
    assert "<html" not in html
    assert 'class="message user"' in html and 'data-status="streaming"' in html
    assert 'id="composer-actions" class="composer-actions" hx-swap-oob="true"' in html and 'class="stop"' in html


def test_healthz(chat: Chat, upstream) -> None:  # noqa: ANN001
    body = chat.client.get("/healthz").get_json()
    assert body == {
        "status": "ok",
        "database": True,
        "provider": "openai",
        "model": "fake-model",
        "broker": "MemoryBroker",
        "generations_running": 0,
        "upstreams": {f"http://127.0.0.1:{upstream.port}": "closed"},
        "streams_open": 0,
        "workers": 1,
    }
    upstream.script(Reply(tokens=WORDS, delay=0.05))
    _, answer_id = chat.start("x")
    assert chat.client.get("/healthz").get_json()["generations_running"] == 1
    chat.post(f"/messages/{answer_id}/stop")


def test_javascript_off_flow(chat: Chat, upstream) -> None:  # noqa: ANN001
    """Plain forms and redirects only: the page refreshes itself until the answer is complete."""
    refresh = '<noscript><meta http-equiv="refresh" content="1; url=/c/'
    page = chat.get("/").get_data(as_text=True)
    assert 'method="post"' in page and 'action="/conversations"' in page and refresh not in page

    reply = Reply(tokens=WORDS, delay=0.01, pause_after=10)  # still being written until stopped
    upstream.script(reply)
    response = chat.post("/conversations", {"content": "no javascript here"})
    assert response.status_code == 303
    location = response.headers["Location"]
    conversation_id, answer_id = map(int, re.findall(r"\d+", location))
    wait_until(lambda: stored(chat.app, answer_id).content, "a flush stored part of the answer")
    page = chat.get(location).get_data(as_text=True)
    assert refresh in page
    assert f'<form method="post" action="/messages/{answer_id}/stop"' in page
    shown = page.split('<div class="tail" sse-swap="tail" hx-swap="innerHTML">', 1)[1].split("</div>", 1)[0]
    assert shown.startswith("<p>w0 w1")  # the refreshed page shows the answer growing, formatted

    assert chat.post(f"/messages/{answer_id}/stop").headers["Location"] == f"/c/{conversation_id}"
    reply.resume.set()
    page = chat.get(f"/c/{conversation_id}").get_data(as_text=True)
    assert refresh not in page and "Stopped." in page and 'class="send"' in page

    answer_id = chat.send(conversation_id, "and now **bold**")
    chat.wait(answer_id)
    page = chat.get(f"/c/{conversation_id}").get_data(as_text=True)
    assert refresh not in page
    assert "<p>Echo: and now <strong>bold</strong></p>" in page


def test_oversized_request_gets_413_with_the_limit(make_app, upstream) -> None:  # noqa: ANN001
    chat = Chat(make_app(MAX_FORM_BYTES=1000, MAX_IMAGE_BYTES=1000, MAX_IMAGES=1))
    response = chat.post("/conversations", {"content": "x" * 200_000})
    assert response.status_code == 413
    assert "the limit is 1,000 bytes for this request" in response.get_data(as_text=True)  # a form: no image allowance
    assert upstream.requests == []


def test_closing_the_tab_does_not_stop_the_answer(live_server: str, app, upstream) -> None:  # noqa: ANN001
    """The viewer's connection drops mid-answer; the answer is still written to the end."""
    import httpx

    upstream.script(Reply(tokens=WORDS[:30], delay=0.02))
    with httpx.Client(base_url=live_server) as client:
        token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/").text).group(1)
        location = client.post("/conversations", data={"csrf_token": token, "content": "go"}).headers["Location"]
        answer_id = int(location.rsplit("message-", 1)[1])
        with client.stream("GET", f"/messages/{answer_id}/events") as stream:
            for line in stream.iter_lines():
                if line.startswith("data: <span>"):
                    break  # the tab closes after the first words
    message = wait_for_status(app, answer_id)
    assert message.status == "complete"
    assert message.content == "".join(WORDS[:30])
