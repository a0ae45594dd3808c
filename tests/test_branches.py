"""Edit, retry, continue and versions: nothing is thrown away, and the visible branch is what is sent."""

from __future__ import annotations

import re

from sqlalchemy import event, func, select

from chatapp.extensions import db
from chatapp.models import Conversation, Message
from tests.conftest import Chat
from tests.fake_upstream import Reply
from tests.sse import collect


def visible_texts(chat: Chat, conversation_id: int) -> list[str]:
    """The text of every message on the page, in order."""
    page = chat.get(f"/c/{conversation_id}").get_data(as_text=True)
    return [
        re.sub(r"<[^>]+>", "", t).strip() for t in re.findall(r'<div class="content [^"]+">(.*?)</div>', page, re.S)
    ]


def five_exchanges(chat: Chat) -> int:
    conversation_id, answer_id = chat.start("q1")
    chat.wait(answer_id)
    for n in range(2, 6):
        chat.wait(chat.send(conversation_id, f"q{n}"))
    return conversation_id


def message_id(chat: Chat, content: str) -> int:
    with chat.app.app_context():
        return db.session.scalars(select(Message.id).filter_by(content=content)).first()


def test_edit_first_message_makes_a_new_branch(chat: Chat, upstream) -> None:  # noqa: ANN001
    conversation_id = five_exchanges(chat)
    before = visible_texts(chat, conversation_id)
    assert before == [t for n in range(1, 6) for t in (f"q{n}", f"Echo: q{n}")]

    response = chat.post(f"/messages/{message_id(chat, 'q1')}/edit", {"content": "q1 edited"})
    assert response.status_code == 303
    answer_id = int(response.headers["Location"].rsplit("message-", 1)[1])
    assert chat.wait(answer_id).content == "Echo: q1 edited"

    assert visible_texts(chat, conversation_id) == ["q1 edited", "Echo: q1 edited"]
    page = chat.get(f"/c/{conversation_id}").get_data(as_text=True)
    assert '<span class="version-count">2 / 2</span>' in page
    # The upstream got only the new branch's history.
    assert [m["content"] for m in upstream.requests[-1]["messages"][1:]] == ["q1 edited"]

    # The old branch is intact, one click away.
    original = message_id(chat, "q1")
    assert chat.post(f"/messages/{original}/show").status_code == 303
    assert visible_texts(chat, conversation_id) == before
    assert "<title>q1 · chatapp</title>" in chat.get(f"/c/{conversation_id}").get_data(as_text=True)


def test_edit_a_middle_message_keeps_the_history_before_it(chat: Chat, upstream) -> None:  # noqa: ANN001
    conversation_id = five_exchanges(chat)
    answer_id = int(
        chat.post(f"/messages/{message_id(chat, 'q3')}/edit", {"content": "q3 again"})
        .headers["Location"]
        .split("-")[-1]
    )
    chat.wait(answer_id)
    assert visible_texts(chat, conversation_id) == ["q1", "Echo: q1", "q2", "Echo: q2", "q3 again", "Echo: q3 again"]
    sent = [m["content"] for m in upstream.requests[-1]["messages"][1:]]
    assert sent == ["q1", "Echo: q1", "q2", "Echo: q2", "q3 again"]


def test_retry_three_times_gives_four_versions(chat: Chat, upstream) -> None:  # noqa: ANN001
    upstream.set_default(Reply(tokens=["first"]))
    conversation_id, answer_id = chat.start("pick a number")
    chat.wait(answer_id)
    ids = [answer_id]
    for n in range(2, 5):
        upstream.set_default(Reply(tokens=[f"version {n}"]))
        response = chat.post(f"/messages/{ids[-1]}/retry")
        ids.append(int(response.headers["Location"].rsplit("message-", 1)[1]))
        chat.wait(ids[-1])
    assert visible_texts(chat, conversation_id)[-1] == "version 4"
    page = chat.get(f"/c/{conversation_id}").get_data(as_text=True)
    assert '<span class="version-count">4 / 4</span>' in page
    assert f'action="/messages/{ids[2]}/show"' in page  # ‹ goes to version 3

    # Walk back to version 2; the choice is stored, so a reload and another browser see it.
    chat.post(f"/messages/{ids[1]}/show")
    assert visible_texts(chat, conversation_id)[-1] == "version 2"
    other_browser = Chat(chat.app)
    other_browser.client.set_cookie("session", chat.client.get_cookie("session").value)
    page = other_browser.get(f"/c/{conversation_id}").get_data(as_text=True)
    assert '<span class="version-count">2 / 4</span>' in page
    assert visible_texts(other_browser, conversation_id)[-1] == "version 2"
    # Every retry used the same history.
    assert all(r["messages"][1:] == [{"role": "user", "content": "pick a number"}] for r in upstream.requests)


def test_switching_shows_the_latest_path_beneath(chat: Chat) -> None:
    conversation_id = five_exchanges(chat)
    q2 = message_id(chat, "q2")
    chat.wait(int(chat.post(f"/messages/{q2}/edit", {"content": "q2b"}).headers["Location"].split("-")[-1]))
    chat.wait(chat.send(conversation_id, "q3 on b"))
    chat.post(f"/messages/{q2}/show")
    assert visible_texts(chat, conversation_id)[-1] == "Echo: q5"
    chat.post(f"/messages/{message_id(chat, 'q2b')}/show")
    assert visible_texts(chat, conversation_id)[-2:] == ["q3 on b", "Echo: q3 on b"]


def test_continue_after_stop_appends_to_the_same_answer(chat: Chat, upstream) -> None:  # noqa: ANN001
    words = [f" w{i}" for i in range(80)]
    upstream.script(Reply(tokens=words, delay=0.02))
    conversation_id, answer_id = chat.start("tell me")
    stream = chat.events(answer_id)
    collect(stream, stop_after=3)
    chat.post(f"/messages/{answer_id}/stop")
    collect(stream)
    partial = chat.wait(answer_id).content
    assert chat.wait(answer_id).status == "stopped"

    upstream.script(Reply(tokens=[" and", " the", " rest."], delay=0.05))
    response = chat.post(f"/messages/{answer_id}/continue")
    assert response.headers["Location"].endswith(f"#message-{answer_id}")  # the same message
    page, events = collect(chat.events(answer_id, f"?after={len(partial)}"))
    assert all(int(e.id) > len(partial) for e in events if e.event == "tail")  # only the new text
    assert page.text == " ".join((partial + " and the rest.").split())
    message = chat.wait(answer_id)
    assert message.status == "complete"
    assert message.content == partial + " and the rest."
    sent = upstream.requests[-1]["messages"]
    assert sent[-2] == {"role": "assistant", "content": partial}
    assert sent[-1]["role"] == "user" and "Continue" in sent[-1]["content"]
    # A viewer that joins late replays the whole text, once.
    _, events = collect(chat.events(answer_id))
    assert [e.event for e in events] == ["done"]  # finished: the final event carries it
    assert visible_texts(chat, conversation_id)[-1] == partial.strip() + " and the rest."


def test_continue_is_only_for_stopped_or_interrupted(chat: Chat) -> None:
    _, answer_id = chat.start("hi")
    chat.wait(answer_id)
    response = chat.post(f"/messages/{answer_id}/continue")
    assert response.status_code == 409
    assert "Only a stopped or interrupted answer can be continued" in response.get_data(as_text=True)


def test_retry_after_error(chat: Chat, upstream) -> None:  # noqa: ANN001
    upstream.script(Reply(status=500, error_message="boom"))
    conversation_id, answer_id = chat.start("hello")
    assert chat.wait(answer_id).status == "error"
    retried = int(chat.post(f"/messages/{answer_id}/retry").headers["Location"].split("-")[-1])
    assert chat.wait(retried).status == "complete"
    page = chat.get(f"/c/{conversation_id}").get_data(as_text=True)
    assert "Echo: hello" in page and "had an error" not in page  # the failed version is out of view
    assert '<span class="version-count">2 / 2</span>' in page


def test_javascript_off_edit_flow(chat: Chat) -> None:
    conversation_id, answer_id = chat.start("original question")
    chat.wait(answer_id)
    user_id = message_id(chat, "original question")
    response = chat.get(f"/messages/{user_id}/edit")
    assert response.status_code == 302
    assert response.headers["Location"] == f"/c/{conversation_id}?edit={user_id}#message-{user_id}"
    page = chat.get(f"/c/{conversation_id}?edit={user_id}").get_data(as_text=True)
    assert f'<form method="post" action="/messages/{user_id}/edit"' in page
    assert ">original question</textarea>" in page
    response = chat.post(f"/messages/{user_id}/edit", {"content": "better question"})
    assert response.status_code == 303
    chat.wait(int(response.headers["Location"].split("-")[-1]))
    assert visible_texts(chat, conversation_id) == ["better question", "Echo: better question"]


def test_too_long_edit_is_refused_and_the_text_kept(make_app, upstream) -> None:  # noqa: ANN001
    chat = Chat(make_app(MAX_USER_MESSAGE_TOKENS=10))
    conversation_id, answer_id = chat.start("short")
    chat.wait(answer_id)
    long_text = "many words " * 20
    user_id = message_id(chat, "short")
    response = chat.post(f"/messages/{user_id}/edit", {"content": long_text})
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert "40 tokens long; the limit is 10" in page and long_text.strip() in page
    response = chat.client.post(
        f"/messages/{user_id}/edit",
        data={"content": long_text},
        headers={"HX-Request": "true", "X-CSRF-Token": chat.token},
    )
    assert response.status_code == 422 and response.headers["HX-Retarget"] == f"#message-{user_id}"
    assert long_text.strip() in response.get_data(as_text=True)
    assert len(upstream.requests) == 1
    with chat.app.app_context():
        assert db.session.scalar(select(func.count(Message.id))) == 2


def test_edit_or_retry_while_streaming_is_refused(chat: Chat, upstream) -> None:  # noqa: ANN001
    conversation_id, answer_id = chat.start("first")
    chat.wait(answer_id)
    upstream.script(Reply(tokens=[f" w{i}" for i in range(100)], delay=0.03))
    streaming = chat.send(conversation_id, "second")
    for url, data in [
        (f"/messages/{message_id(chat, 'first')}/edit", {"content": "x"}),
        (f"/messages/{answer_id}/retry", {}),
    ]:
        response = chat.post(url, data)
        assert response.status_code == 409
        assert "still being written" in response.get_data(as_text=True)
    chat.post(f"/messages/{streaming}/stop")


def test_htmx_branch_actions_replace_the_whole_list(chat: Chat, upstream) -> None:  # noqa: ANN001
    conversation_id, answer_id = chat.start("one")
    chat.wait(answer_id)
    chat.wait(chat.send(conversation_id, "two"))
    headers = {"HX-Request": "true", "X-CSRF-Token": chat.token}
    form = chat.client.get(f"/messages/{message_id(chat, 'one')}/edit", headers=headers).get_data(as_text=True)
    assert 'class="message user editing"' in form and "<html" not in form
    # The new answer takes a moment, so the list comes back with it still being written (not a race
    # between the answer and the response).
    upstream.script(Reply(tokens=["Echo:", " uno"], first_delay=1.0))
    html = chat.client.post(
        f"/messages/{message_id(chat, 'one')}/edit", data={"content": "uno"}, headers=headers
    ).get_data(as_text=True)
    assert "two" not in html and "Echo: one" not in html  # nothing of the old branch remains
    assert "uno" in html and 'data-status="streaming"' in html and 'class="stop"' in html


def test_delete_removes_every_branch(chat: Chat) -> None:
    conversation_id = five_exchanges(chat)
    chat.wait(
        int(chat.post(f"/messages/{message_id(chat, 'q2')}/edit", {"content": "b"}).headers["Location"].split("-")[-1])
    )
    chat.post(f"/c/{conversation_id}/delete")
    with chat.app.app_context():
        assert db.session.scalar(select(func.count(Message.id))) == 0


def test_large_branchy_conversation_page_loads_in_five_message_queries(chat: Chat) -> None:
    conversation_id, answer_id = chat.start("root")
    chat.wait(answer_id)
    with chat.app.app_context():
        conversation = db.session.get(Conversation, conversation_id)
        parent_id = answer_id
        for n in range(1000):  # 2,000 messages on the main line, and a side branch every 10
            user = Message(conversation_id=conversation_id, parent_id=parent_id, role="user", content=f"u{n}")
            db.session.add(user)
            db.session.flush()
            if n % 10 == 0:
                db.session.add(
                    Message(conversation_id=conversation_id, parent_id=parent_id, role="user", content=f"alt{n}")
                )
            answer = Message(conversation_id=conversation_id, parent_id=user.id, role="assistant", content=f"a{n}")
            db.session.add(answer)
            db.session.flush()
            parent_id = answer.id
        conversation.active_leaf_id = parent_id
        db.session.commit()
        engine = db.engine

    statements: list[str] = []
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        page = chat.get(f"/c/{conversation_id}").get_data(as_text=True)
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    # The latest 50 of the 2,002 on the path (the page shows a window of a long conversation), the
    # side branches among them counted: the path walk, the window with its siblings, the streaming check;
    # and two small ones: the token meter's stored counts along the path, the conversation's cost (a sum).
    assert page.count('class="message ') == 50
    assert page.count('<span class="version-count">1 / 2</span>') == 2  # exchanges 980 and 990
    assert "(1952 more)" in page
    message_queries = [s for s in statements if "FROM message" in s]
    assert len(message_queries) <= 5, message_queries
