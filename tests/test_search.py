"""Search: one query syntax with the same results on SQLite (FTS5) and PostgreSQL (tsvector), every branch,
the results page without JavaScript, the read-only branch view, filters, notes, the API."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text

from chatapp import search
from chatapp.extensions import db
from chatapp.models import Conversation, Message, Note, User
from tests.auth import api_token
from tests.conftest import Chat
from tests.fake_upstream import Reply, save_note


@pytest.fixture(params=["sqlite", "postgresql"])
def chat_on(request, make_app) -> Chat:  # noqa: ANN001
    """A no-JS browser on an app backed by SQLite, then by PostgreSQL: every test runs on both."""
    if request.param == "postgresql":
        return Chat(make_app(DATABASE_URL=request.getfixturevalue("postgres_url")))
    return Chat(make_app())


def results(chat: Chat, query: str, **filters: str) -> list[tuple[str, str]]:
    """(role label, snippet text) of each result on the search page, in order."""
    page = chat.get("/search", query_string={"q": query, **filters}).get_data(as_text=True)
    found = re.findall(
        r'<p class="result-meta">\s*<span>(\w+)</span>.*?<p class="result-snippet">(.*?)</p>', page, re.S
    )
    return [(role, re.sub(r"<[^>]+>", "", snippet)) for role, snippet in found]


def marks(chat: Chat, query: str) -> list[str]:
    page = chat.get("/search", query_string={"q": query}).get_data(as_text=True)
    return re.findall(r"<mark>(.*?)</mark>", page)


MESSAGES = ["I write Python every day", "Café crème at the Gare du Nord", "the quick brown fox"]


def seed(chat: Chat) -> int:
    conversation_id, answer_id = chat.start(MESSAGES[0])
    chat.wait(answer_id)
    for content in MESSAGES[1:]:
        chat.wait(chat.send(conversation_id, content))
    assert chat.post(f"/c/{conversation_id}/rename", {"title": "Seed"}).status_code == 303
    return conversation_id


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("pyth", [("Answer", "Echo: I write Python every day"), ("You", "I write Python every day")]),
        ("PYTHON", [("Answer", "Echo: I write Python every day"), ("You", "I write Python every day")]),
        ("cafe creme", [("Answer", "Echo: Café crème at the Gare du Nord"), ("You", "Café crème at the Gare du Nord")]),
        ("CRÈME", [("Answer", "Echo: Café crème at the Gare du Nord"), ("You", "Café crème at the Gare du Nord")]),
        ('"quick brown"', [("Answer", "Echo: the quick brown fox"), ("You", "the quick brown fox")]),
        ('"brown quick"', []),
        ('"quick bro', [("Answer", "Echo: the quick brown fox"), ("You", "the quick brown fox")]),
        ("fox quick", [("Answer", "Echo: the quick brown fox"), ("You", "the quick brown fox")]),
        ("fox python", []),
        ('"ython"', []),
        ("écho gare", [("Answer", "Echo: Café crème at the Gare du Nord")]),
    ],
)
def test_the_query_syntax_means_the_same_on_both_databases(chat_on: Chat, query: str, expected: list) -> None:
    seed(chat_on)
    assert results(chat_on, query) == expected


def test_matches_are_highlighted_and_the_text_escaped(chat_on: Chat) -> None:
    conversation_id, answer_id = chat_on.start("<script>alert(1)</script> Pythonic & tidy")
    chat_on.wait(answer_id)
    page = chat_on.get("/search?q=pythonic").get_data(as_text=True)
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; <mark>Pythonic</mark> &amp; tidy" in page
    # The conversation's title, a link to the exact message on its branch, and the date.
    answer = chat_on.latest_answer(conversation_id)
    assert f'href="/c/{conversation_id}?leaf={answer}#message-{answer}"' in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; Pythonic &amp; tidy</a>" in page  # the title
    assert datetime.now(UTC).strftime("%Y-%m-%d") in page


def test_titles_are_searched_too(chat_on: Chat) -> None:
    conversation_id, answer_id = chat_on.start("hello")
    chat_on.wait(answer_id)
    assert chat_on.post(f"/c/{conversation_id}/rename", {"title": "Holiday plans Zürich"}).status_code == 303
    assert results(chat_on, "zurich") == [("Title", "Holiday plans Zürich")]
    assert marks(chat_on, "zurich") == ["Zürich"]


def test_an_answer_is_indexed_when_it_stops_streaming(chat_on: Chat, upstream) -> None:  # noqa: ANN001
    upstream.script(Reply(tokens=["zebra", " crossing"] + [" more"] * 40, delay=0.03))
    conversation_id, answer_id = chat_on.start("tell me")
    # The flusher writes the growing text every half second; it is not searchable until the end.
    deadline = datetime.now() + timedelta(seconds=5)
    while datetime.now() < deadline:
        with chat_on.app.app_context():
            if "zebra" in (db.session.get(Message, answer_id).content or ""):
                break
    assert results(chat_on, "zebra") == []
    assert chat_on.wait(answer_id).status == "complete"
    assert [role for role, _ in results(chat_on, "zebra")] == ["Answer"]


def test_every_branch_is_found_and_opens_read_only_without_changing_the_path(chat_on: Chat) -> None:
    conversation_id, answer_id = chat_on.start("original walrus question")
    chat_on.wait(answer_id)
    with chat_on.app.app_context():
        first = db.session.scalars(select(Message.id).filter_by(content="original walrus question")).one()
    response = chat_on.post(f"/messages/{first}/edit", {"content": "edited narwhal question"})
    chat_on.wait(int(response.headers["Location"].rsplit("message-", 1)[1]))
    with chat_on.app.app_context():
        leaf_before = db.session.get(Conversation, conversation_id).active_leaf_id

    assert [role for role, _ in results(chat_on, "walrus")] == ["Answer", "You", "Title"]  # the hidden branch
    assert [role for role, _ in results(chat_on, "narwhal")] == ["Answer", "You"]  # and the visible one

    page = chat_on.get("/search?q=walrus&role=user").get_data(as_text=True)
    link = re.search(r'class="result-link" href="([^"]+)"', page).group(1).replace("&amp;", "&")
    assert link == f"/c/{conversation_id}?leaf={first}#message-{first}"
    shown = chat_on.get(link.split("#")[0]).get_data(as_text=True)
    assert "original walrus question" in shown and "Echo: original walrus question" in shown
    assert "edited narwhal question" not in shown
    assert "another version of this conversation" in shown and 'id="composer"' not in shown
    with chat_on.app.app_context():
        assert db.session.get(Conversation, conversation_id).active_leaf_id == leaf_before  # nothing changed

    # A message on the visible path opens the ordinary page, with the composer.
    with chat_on.app.app_context():
        edited = db.session.scalars(select(Message.id).filter_by(content="edited narwhal question")).one()
    ordinary = chat_on.get(f"/c/{conversation_id}?leaf={edited}").get_data(as_text=True)
    assert 'id="composer"' in ordinary and "another version of this conversation" not in ordinary
    # Someone else's message id, or a message of another conversation, is a 404.
    assert chat_on.get(f"/c/{conversation_id}?leaf=999999").status_code == 404


def test_filters_by_conversation_author_and_date(chat_on: Chat) -> None:
    first = seed(chat_on)
    second, answer_id = chat_on.start("more python notes")
    chat_on.wait(answer_id)
    assert len(results(chat_on, "python")) == 5  # and the second conversation's title
    assert results(chat_on, "python", role="user") == [("You", "more python notes"), ("You", MESSAGES[0])]
    assert [s for _, s in results(chat_on, "python", role="assistant", conversation=str(first))] == [
        "Echo: " + MESSAGES[0]
    ]
    today = datetime.now(UTC).date()
    assert len(results(chat_on, "python", **{"from": today.isoformat(), "to": today.isoformat()})) == 5
    assert results(chat_on, "python", **{"from": (today + timedelta(days=1)).isoformat()}) == []
    assert results(chat_on, "python", to=(today - timedelta(days=1)).isoformat()) == []
    bad = chat_on.get("/search?q=python&from=31/01/2026")
    assert bad.status_code == 422 and "YYYY-MM-DD" in bad.get_data(as_text=True)
    assert 'value="python"' in bad.get_data(as_text=True)  # what was typed stays in the box
    assert second != first


def test_archived_chats_are_labelled_and_temporary_ones_never_found(chat_on: Chat) -> None:
    archived, answer_id = chat_on.start("archived platypus")
    chat_on.wait(answer_id)
    chat_on.post(f"/c/{archived}/archive", {"archived": "1"})
    page = chat_on.get("/search?q=platypus").get_data(as_text=True)
    assert page.count('<span class="badge">Archived</span>') == 3  # title, question, answer

    response = chat_on.post("/conversations", {"content": "secret platypus", "temporary": "1"})
    chat_on.wait(int(response.headers["Location"].rsplit("message-", 1)[1]))
    assert all("secret" not in snippet for _, snippet in results(chat_on, "platypus"))
    assert results(chat_on, "secret") == []


def test_newest_first_or_by_relevance_and_paged(chat_on: Chat) -> None:
    conversation_id, answer_id = chat_on.start("llama")
    chat_on.wait(answer_id)
    chat_on.wait(chat_on.send(conversation_id, "llama llama llama alpaca vicuna guanaco llama"))
    chat_on.wait(chat_on.send(conversation_id, "one llama among many other words in a long sentence here"))
    newest = [s for _, s in results(chat_on, "llama", role="user")]
    assert newest[0].startswith("one llama") and newest[-1] == "llama"
    best = [s for _, s in results(chat_on, "llama", role="user", order="relevance")]
    assert best[0].startswith("llama llama llama")
    with chat_on.app.app_context():
        user = db.session.get(User, db.session.get(Conversation, conversation_id).user_id)
        seen, cursor = [], None
        for _ in range(10):
            page = search.search(user, "llama", search.Filters(), limit=2, cursor=cursor)
            seen += [r.message_id for r in page.results]
            cursor = page.next_cursor
            if not cursor:
                break
        assert len(seen) == len(set(seen)) == 7  # three questions, three answers, the title


def test_the_migration_indexes_what_is_already_there(chat_on: Chat) -> None:
    from flask_migrate import downgrade, upgrade

    conversation_id, answer_id = chat_on.start("backfilled ocelot")
    chat_on.wait(answer_id)
    with chat_on.app.app_context():
        downgrade(revision="d4e6b3c2f704")
        db.session.execute(
            text("UPDATE conversation SET title = 'Ocelots of Perú' WHERE id = :id"), {"id": conversation_id}
        )
        db.session.commit()
        upgrade()
    assert [role for role, _ in results(chat_on, "ocelot")] == ["Answer", "You", "Title"]
    assert results(chat_on, "peru") == [("Title", "Ocelots of Perú")]


def test_the_api_searches_with_a_cursor_and_documents_it(chat_on: Chat) -> None:
    client = chat_on.app.test_client()
    token = client.post("/api/v1/auth/guest").get_json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    created = client.post("/api/v1/conversations", json={"title": "Koala facts"}, headers=headers).get_json()
    for n in range(3):
        sent = client.post(
            f"/api/v1/conversations/{created['id']}/messages", json={"content": f"koala {n}"}, headers=headers
        )
        assert sent.status_code == 202
        chat_on.wait(sent.get_json()["assistant_message"]["id"])
    first = client.get("/api/v1/search?q=koa&limit=4", headers=headers).get_json()
    assert [i["role"] for i in first["items"]] == ["assistant", "user", "assistant", "user"]
    assert first["items"][0]["snippet_html"] == "Echo: <mark>koala</mark> 2"
    assert first["items"][0]["conversation_title"] == "Koala facts"
    rest = client.get(f"/api/v1/search?q=koa&limit=4&cursor={first['next_cursor']}", headers=headers).get_json()
    assert [i["role"] for i in rest["items"]] == ["assistant", "user", "title"] and rest["next_cursor"] is None
    bad = client.get("/api/v1/search?q=koa&role=robot", headers=headers)
    assert bad.status_code == 422 and "role must be user, assistant or note" in bad.get_json()["error"]["message"]
    assert client.get("/api/v1/search?q=koa&cursor=nonsense", headers=headers).status_code == 422
    assert client.get("/api/v1/search?q=koa").status_code == 401
    document = client.get("/api/v1/openapi.json").get_json()
    operation = document["paths"]["/api/v1/search"]["get"]
    assert {p["name"] for p in operation["parameters"]} >= {"q", "limit", "cursor"}
    assert operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("SearchPage")


def test_another_identity_finds_nothing_of_mine(chat_on: Chat) -> None:
    seed(chat_on)
    stranger = Chat(chat_on.app)
    stranger.start("my own words")
    assert results(stranger, "python") == []
    assert results(chat_on, "python") != []


def test_query_parsing_and_snippets() -> None:
    terms = search.parse_query('Pyth "Crème brûlée" e-mail')
    assert terms == [
        search.Term(("pyth",), True),
        search.Term(("creme", "brulee"), False),
        search.Term(("e", "mail"), True),
    ]
    assert search.fts5_query(terms) == '"pyth" * "creme brulee" "e mail" *'
    assert search.tsquery(terms) == "('pyth':*) & ('creme' <-> 'brulee') & ('e' <-> 'mail':*)"
    assert search.parse_query('" " ,,, ""') == []
    long_text = "word " * 100 + "needle in the haystack " + "word " * 100
    excerpt = str(search.snippet(long_text, search.parse_query("needle")))
    assert excerpt.startswith("…") and excerpt.endswith("…") and "<mark>needle</mark>" in excerpt
    assert len(excerpt) < search.SNIPPET_CHARS + 40


def test_index_conversation_indexes_rows_written_without_the_core(chat_on: Chat) -> None:
    """For importers: rows added directly are found once ``index_conversation`` has run."""
    chat_on.start("a first message")
    with chat_on.app.app_context():
        user = db.session.scalars(select(User)).one()
        imported = Conversation(user_id=user.id, title="Imported tapir notes")
        db.session.add(imported)
        db.session.flush()
        question = Message(conversation_id=imported.id, role="user", content="Where do tapirs sleep?")
        db.session.add(question)
        db.session.flush()
        db.session.add(
            Message(conversation_id=imported.id, parent_id=question.id, role="assistant", content="Forests.")
        )
        db.session.commit()
        assert search.search(user, "tapir").results == []
        search.index_conversation(imported.id)
        db.session.commit()
        assert [r.role for r in search.search(user, "tapir").results] == ["user", "title"]
        assert [r.role for r in search.search(user, "forests").results] == ["assistant"]


# -- notes -------------------------------------------------------------------------------------------------
def note_ids(chat: Chat, conversation_id: int) -> list[int]:
    with chat.app.app_context():
        return list(
            db.session.scalars(select(Note.id).where(Note.conversation_id == conversation_id).order_by(Note.id))
        )


def api_notes(chat: Chat, token: str, query: str) -> list[tuple]:
    """(role, note id, message id, snippet) of each result of the API's search with ``role=note``."""
    response = chat.app.test_client().get(
        "/api/v1/search", query_string={"q": query, "role": "note"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    return [(i["role"], i["note_id"], i["message_id"], i["snippet_html"]) for i in response.get_json()["items"]]


def test_notes_are_found_as_notes_on_the_page_and_the_api(chat_on: Chat, upstream) -> None:  # noqa: ANN001
    token = api_token(chat_on)  # the same identity through the API
    upstream.script(
        Reply(tokens=["Noted."], tool_calls=[save_note("Quokkas smile on Rottnest", "call_quokka")]),
        Reply(tokens=[" Anything else?"]),
    )
    conversation_id, answer_id = chat_on.start("tell me about marsupials")
    chat_on.wait(answer_id)
    assert chat_on.post(f"/c/{conversation_id}/notes", {"content": "Buy a quokka plushie"}).status_code == 303
    chat_on.wait(chat_on.send(conversation_id, "more quokka facts"))
    tool_note, user_note = note_ids(chat_on, conversation_id)

    assert results(chat_on, "quokka") == [
        ("Answer", "Echo: more quokka facts"),
        ("You", "more quokka facts"),
        ("Note", "Buy a quokka plushie"),
        ("Note", "Quokkas smile on Rottnest"),
    ]
    assert results(chat_on, "quokka", role="note") == [
        ("Note", "Buy a quokka plushie"),
        ("Note", "Quokkas smile on Rottnest"),
    ]
    assert results(chat_on, "quokka", role="user") == [("You", "more quokka facts")]
    assert api_notes(chat_on, token, "quokka") == [
        ("note", user_note, None, "Buy a <mark>quokka</mark> plushie"),
        ("note", tool_note, None, "<mark>Quokkas</mark> smile on Rottnest"),
    ]
    # A note's result opens its conversation with the Notes panel open, at that note.
    page = chat_on.get("/search?q=plushie").get_data(as_text=True)
    link = re.search(r'class="result-link" href="([^"]+)"', page).group(1).replace("&amp;", "&")
    assert link == f"/c/{conversation_id}?notes=1#note-{user_note}"
    opened = chat_on.get(link.split("#")[0]).get_data(as_text=True)
    assert '<details id="notes" class="notes-panel" open>' in opened and f'id="note-{user_note}"' in opened

    # Editing re-indexes the note; deleting takes it out.
    assert chat_on.post(f"/notes/{user_note}/edit", {"content": "Buy a wombat plushie"}).status_code == 303
    assert results(chat_on, "quokka", role="note") == [("Note", "Quokkas smile on Rottnest")]
    assert results(chat_on, "wombat") == [("Note", "Buy a wombat plushie")]
    assert [n for _, n, _, _ in api_notes(chat_on, token, "wombat")] == [user_note]
    assert chat_on.post(f"/notes/{user_note}/delete").status_code == 303
    assert results(chat_on, "wombat") == [] and api_notes(chat_on, token, "wombat") == []


def test_notes_of_temporary_chats_and_of_others_are_never_found(chat_on: Chat, upstream) -> None:  # noqa: ANN001
    conversation_id, answer_id = chat_on.start("hello")
    chat_on.wait(answer_id)
    chat_on.post(f"/c/{conversation_id}/notes", {"content": "my own capybara note"})
    upstream.script(
        Reply(tokens=["Sure."], tool_calls=[save_note("capybara from the tool, off the record")]), Reply(tokens=["."])
    )
    response = chat_on.post("/conversations", {"content": "off the record", "temporary": "1"})
    temporary, answer_id = (
        int(n) for n in re.search(r"/c/(\d+)#message-(\d+)$", response.headers["Location"]).groups()
    )
    chat_on.wait(answer_id)
    assert chat_on.post(f"/c/{temporary}/notes", {"content": "secret capybara"}).status_code == 303
    assert len(note_ids(chat_on, temporary)) == 2  # the tool's and the user's: kept, never indexed
    assert results(chat_on, "capybara") == [("Note", "my own capybara note")]

    stranger = Chat(chat_on.app)
    theirs, answer_id = stranger.start("hi")
    stranger.wait(answer_id)
    stranger.post(f"/c/{theirs}/notes", {"content": "capybara note of a stranger"})
    assert results(stranger, "capybara") == [("Note", "capybara note of a stranger")]
    assert results(chat_on, "capybara") == [("Note", "my own capybara note")]
    assert api_notes(stranger, api_token(stranger), "capybara")[0][3] == "<mark>capybara</mark> note of a stranger"


def test_the_migration_indexes_the_notes_already_there(chat_on: Chat) -> None:
    from flask_migrate import downgrade, upgrade

    conversation_id, answer_id = chat_on.start("hello")
    chat_on.wait(answer_id)
    chat_on.post(f"/c/{conversation_id}/notes", {"content": "Backfilled pangolin"})
    response = chat_on.post("/conversations", {"content": "hi", "temporary": "1"})
    temporary = int(re.search(r"/c/(\d+)#", response.headers["Location"]).group(1))
    chat_on.post(f"/c/{temporary}/notes", {"content": "temporary pangolin"})
    with chat_on.app.app_context():
        downgrade(revision="e1a2b3c4d505")  # the notes' entries go with the column
        assert db.session.execute(text("SELECT count(*) FROM search_entry WHERE role = 'note'")).scalar() == 0
        db.session.commit()
        upgrade()
    assert results(chat_on, "pangolin") == [("Note", "Backfilled pangolin")]
