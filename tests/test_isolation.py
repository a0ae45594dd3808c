"""Another identity gets 404 on every route that takes an id: the table is derived from the url_map,
so a route added tomorrow is checked without anyone remembering to list it."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import pytest
from PIL import Image as PILImage

from chatapp.extensions import db
from chatapp.models import ApiToken, Conversation, Image, ImportJob, Message, Note, Preset, RoomMember, ShareLink
from tests.clients import ApiClient, stored
from tests.conftest import Chat
from tests.fake_upstream import Reply

# Routes whose ids need no owner check, each with the reason: {rule: why}. None today; a route added
# here is exempt from the stranger check below.
NO_OWNER: dict[str, str] = {
    "/reset/<token>": "a secret single-use link, not an id: unknown links are 404 (tests/test_admin.py)",
    "/join/<token>": "a room's secret invite link, not an id: ended or unknown links are 404 (tests/test_rooms.py)",
    **{
        rule: "a share link: its secret token is what lets anyone holding it look (tests/test_share.py)"
        for rule in (
            "/s/<token>",
            "/s/<token>/watch",
            "/s/<token>/images/<int:image_id>",
            "/s/<token>/fork",
            "/api/v1/shared/<token>",
            "/api/v1/shared/<token>/messages/<int:message_id>/stream",
            "/api/v1/shared/<token>/images/<int:image_id>",
        )
    },
    **{
        f"/admin{path}": "an admin's action, not an owner's: non-admins get 404 (tests/test_admin.py)"
        for path in (
            "/invites/<int:invite_id>/revoke",
            "/users/<user_id>/disable",
            "/users/<user_id>/enable",
            "/users/<user_id>/delete",
            "/users/<user_id>/reset-link",
        )
    },
}
# Ids passed in the query string rather than the path (the url_map cannot show them).
QUERY_ID_ROUTES = [("POST", "/transcribe?conversation_id={conversation_id}", "/transcribe")]
# A valid body for every request schema of the API (by its OpenAPI name), so that a refusal can only
# be about whose the id is, never about the body.
API_BODIES = {
    "MessageCreate": {"content": "a stranger's text"},
    "MessageEdit": {"content": "a stranger's text"},
    "Feedback": {"rating": "down", "comment": "a stranger's comment"},
    "ConversationUpdate": {"title": "taken over"},
    "RetryOptions": {},
    "Draft": {"content": "a stranger's draft"},
    "NewChatDraft": {"content": "a stranger's draft"},
    "PresetUpdate": {"name": "taken over"},
    "ShareCreate": {"kind": "live"},
    "InviteCreate": {"role": "member"},
    "NoteCreate": {"content": "a stranger's note"},
    "NoteUpdate": {"content": "a stranger's note"},
    "FolderUpdate": {"name": "taken over"},
}
PAGE_FORM = {
    "content": "a stranger's text",
    "title": "taken over",
    "name": "a stranger's token",
    "chats": "delete",
    "folder_id": "",
    "pinned": "1",
    "archived": "1",
}
ID_PART = re.compile(r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>")


@dataclass(frozen=True)
class Case:
    method: str
    url: str
    rule: str

    @property
    def api(self) -> bool:
        return self.url.startswith("/api/")

    @property
    def destructive(self) -> bool:
        return self.method == "DELETE" or self.url.split("?")[0].endswith(("/delete", "/revoke", "/remove"))


@dataclass
class Owner:
    ids: dict[str, list[int]]  # by URL argument name
    chat: Chat
    token: str  # an API token of the same identity


def png() -> bytes:
    out = io.BytesIO()
    PILImage.new("RGB", (4, 4), (10, 20, 30)).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def app(make_app):  # noqa: ANN001, ANN201
    """Every destructive route gets an owner of its own: more new guests than one network may make."""
    return make_app(GUEST_LIMIT_PER_IP="off")


@pytest.fixture
def owner(app, upstream) -> Owner:  # noqa: ANN001
    return make_owner(app, upstream)


def make_owner(app, upstream) -> Owner:  # noqa: ANN001
    """A conversation, a question with an image, a stopped answer (so stop, retry and continue would all
    act for the owner), two API tokens (one to revoke) and a preset, all of one page visitor."""
    chat = Chat(app)
    reply = Reply(tokens=[f" o{i}" for i in range(20)], pause_after=2)
    upstream.script(reply)
    response = chat.post(
        "/conversations",
        {"content": "owned", "images": [(io.BytesIO(png()), "a.png")]},
        content_type="multipart/form-data",
    )
    assert response.status_code == 303, response.get_data(as_text=True)[-600:]
    answer_id = int(response.headers["Location"].rsplit("message-", 1)[1])
    chat.post(f"/messages/{answer_id}/stop")
    reply.resume.set()
    answer = stored(app, answer_id)
    assert answer.status == "stopped"
    tokens = []
    for name in ("revoked by the owner", "the owner's program"):
        created = chat.post("/settings/tokens", {"name": name}).get_data(as_text=True)
        tokens.append(re.search(r'id="new-token">([^<]+)<', created).group(1))
    assert chat.post("/settings/presets", {"name": "the owner's preset"}).status_code == 303
    shared = chat.post(f"/c/{answer.conversation_id}/share", {"kind": "live", "visibility": "anyone"})
    assert shared.status_code == 303, shared.get_data(as_text=True)
    # A room with a member (for the member routes).
    assert chat.post(f"/c/{answer.conversation_id}/invite", {"role": "member"}).status_code == 303
    folder = chat.post("/folders", {"name": "owned folder"})
    folder_id = int(folder.headers["Location"].rsplit("/", 1)[1])
    with app.app_context():
        invite = db.session.get(Conversation, answer.conversation_id).invite_token
    member = Chat(app)
    member.get(f"/join/{invite}")
    assert member.post(f"/join/{invite}").status_code == 303
    with app.app_context():
        member_id = db.session.scalars(db.select(RoomMember.id).filter_by(conversation_id=answer.conversation_id)).one()
    chat.post(f"/c/{answer.conversation_id}/notes", {"content": "the owner's note"})
    with app.app_context():
        note_id = db.session.scalars(db.select(Note.id).filter_by(conversation_id=answer.conversation_id)).one()
        image_id = db.session.scalars(db.select(Image.id).filter_by(message_id=answer.parent_id)).one()
        user_id = db.session.get(Conversation, answer.conversation_id).user_id
        token_ids = list(db.session.scalars(db.select(ApiToken.id).filter_by(user_id=user_id).order_by(ApiToken.id)))
        preset_id = db.session.scalars(db.select(Preset.id).filter_by(user_id=user_id)).one()
        mine = db.select(ShareLink.token).filter_by(conversation_id=answer.conversation_id)
        share_token = db.session.scalars(mine).one()
        job = ImportJob(user_id=user_id, filename="mine.json", size=10, kind="chatapp", status="done")
        db.session.add(job)
        db.session.commit()
        job_id = job.id
    ids = {
        "conversation_id": [answer.conversation_id],
        "message_id": [answer.parent_id, answer_id],
        "image_id": [image_id],
        "token_id": [token_ids[0]],
        "preset_id": [preset_id],
        "token": [share_token],  # the owner's share link: only its owner may turn it off
        "member_id": [member_id],
        "note_id": [note_id],
        "folder_id": [folder_id],
        "import_id": [job_id],  # an import's status
        "job_id": [job_id],
    }
    return Owner(ids, chat, tokens[1])


def cases(app, ids: dict[str, list[int]]) -> list[Case]:  # noqa: ANN001
    """Every method of every route with an id in its path (or query), with the owner's ids filled in."""
    found, unknown = [], []
    for rule in app.url_map.iter_rules():
        if not rule.arguments or rule.endpoint == "static" or rule.rule in NO_OWNER:
            continue
        if missing := sorted(a for a in rule.arguments if a not in ids):
            unknown.append(f"{rule.rule}: {', '.join(missing)}")
            continue
        combos: list[dict] = [{}]
        for name in sorted(rule.arguments):
            combos = [{**c, name: value} for c in combos for value in ids[name]]
        for values in combos:
            url = ID_PART.sub(lambda m, v=values: str(v[m.group(2)]), rule.rule)
            found += [Case(method, url, rule.rule) for method in sorted(rule.methods - {"OPTIONS"})]
    assert not unknown, f"give the owner's id for these route arguments (or add the route to NO_OWNER): {unknown}"
    for method, template, rule in QUERY_ID_ROUTES:
        found += [Case(method, template.format(conversation_id=c), rule) for c in ids["conversation_id"]]
    return found


def api_bodies(app, table: list[Case]) -> dict[tuple[str, str], dict]:  # noqa: ANN001
    """(method, rule) -> a valid JSON body, for every API case whose OpenAPI operation takes one."""
    document = app.test_client().get("/api/v1/openapi.json").get_json()
    bodies, missing = {}, set()
    for case in (c for c in table if c.api):
        path = ID_PART.sub(lambda m: "{" + m.group(2) + "}", case.rule)
        operation = document["paths"].get(path, {}).get(case.method.lower(), {})
        schema = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
        if schema:
            name = schema["$ref"].rsplit("/", 1)[1]
            if name in API_BODIES:
                bodies[(case.method, case.rule)] = API_BODIES[name]
            else:
                missing.add(name)
    assert not missing, f"add a valid example body to API_BODIES for {sorted(missing)}"
    return bodies


def call(page: Chat, api_token: str, case: Case, bodies: dict):  # noqa: ANN201
    """The request as this page visitor, or (for the API) with this bearer token; the response, closed."""
    if case.api:
        body = bodies.get((case.method, case.rule))
        headers = {"Authorization": f"Bearer {api_token}"}
        response = page.client.open(case.url, method=case.method, json=body, headers=headers)
    elif case.method in ("GET", "HEAD"):
        response = page.client.open(case.url, method=case.method)
    else:
        response = page.client.open(case.url, method=case.method, data={**PAGE_FORM, "csrf_token": page.token})
    response.close()
    return response


def snapshot(app) -> dict:  # noqa: ANN001
    """Everything a stranger's call could have changed."""
    with app.app_context():
        return {
            "conversations": [
                (c.id, c.title, c.active_leaf_id, c.model, c.system_prompt)
                for c in db.session.scalars(db.select(Conversation).order_by(Conversation.id))
            ],
            "messages": [
                (m.id, m.content, m.status, m.feedback_rating, m.feedback_comment)
                for m in db.session.scalars(db.select(Message).order_by(Message.id))
            ],
            "images": list(db.session.scalars(db.select(Image.id).order_by(Image.id))),
            "tokens": list(db.session.scalars(db.select(ApiToken.id).order_by(ApiToken.id))),
            "presets": [(p.id, p.name, p.model) for p in db.session.scalars(db.select(Preset).order_by(Preset.id))],
            "shares": [(x.token, x.revoked_at) for x in db.session.scalars(db.select(ShareLink).order_by("id"))],
            "notes": [(n.id, n.content) for n in db.session.scalars(db.select(Note).order_by(Note.id))],
        }


def test_a_stranger_gets_404_on_every_route_with_an_id(app, owner: Owner, upstream) -> None:  # noqa: ANN001
    table = cases(app, owner.ids)
    bodies = api_bodies(app, table)
    routes = {c.rule for c in table}
    # The table really is derived: the routes the README lists are all in it.
    expected = [
        "/messages/<int:message_id>/edit",
        "/api/v1/messages/<int:message_id>/feedback",
        "/images/<int:image_id>",
    ]
    assert set(expected) <= routes

    stranger = Chat(app)
    stranger.get("/")
    stranger_token = ApiClient(app).token
    before = snapshot(app)
    answered = {f"{c.method} {c.url}": call(stranger, stranger_token, c, bodies).status_code for c in table}
    assert {k: v for k, v in answered.items() if v != 404} == {}
    assert snapshot(app) == before  # and nothing of the owner's changed

    # The same calls by the owner reach real things (the table is not 404 for everyone); each call that
    # deletes something gets an owner of its own, so that no deletion hides another route.
    for case in table:
        if case.destructive:
            fresh = make_owner(app, upstream)
            case = next(c for c in cases(app, fresh.ids) if (c.method, c.rule) == (case.method, case.rule))
            status = call(fresh.chat, fresh.token, case, bodies).status_code
        else:
            status = call(owner.chat, owner.token, case, bodies).status_code
        assert status != 404, f"{case.method} {case.url} is 404 for its owner too"


def test_every_admin_route_is_404_for_a_non_admin(app, owner: Owner) -> None:  # noqa: ANN001
    """Derived from the url_map too, so a new admin route cannot be left open."""
    rules = [r for r in app.url_map.iter_rules() if r.rule.startswith("/admin")]
    assert rules
    for rule in rules:
        url = ID_PART.sub("1", rule.rule)
        for method in sorted(rule.methods - {"OPTIONS", "HEAD"}):
            response = owner.chat.client.open(url, method=method, data={"csrf_token": owner.chat.token})
            assert response.status_code == 404, f"{method} {url}"
