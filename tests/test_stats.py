"""Stats: each answer's words and tone, the Stats page (charts with tables, no script) and the API's series."""

from __future__ import annotations

import base64
import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from chatapp.extensions import db
from chatapp.models import Message
from tests import test_page
from tests.auth import api_token, sign_up, text, update_user, user_named
from tests.clients import ApiClient
from tests.conftest import Chat
from tests.fake_upstream import Reply

browser = test_page.browser  # the module's Chromium

HAPPY = "What a wonderful idea! I love it, this is great and it will work beautifully."
GLOOMY = "That is a terrible, awful plan. It will fail badly and everyone will hate it."


def tokens(text: str) -> list[str]:
    return re.findall(r"\S+\s*", text)


def set_created(app, message_id: int, when: datetime) -> None:  # noqa: ANN001
    with app.app_context():
        db.session.execute(db.update(Message).where(Message.id == message_id).values(created_at=when))
        db.session.commit()


def test_each_answer_keeps_its_words_and_tone_shown_on_the_page_and_in_the_api(chat: Chat, upstream) -> None:  # noqa: ANN001
    upstream.script(Reply(tokens=tokens(HAPPY)), Reply(tokens=tokens(GLOOMY)))
    conversation_id, happy = chat.start("how is my idea?")
    chat.wait(happy)
    gloomy = chat.send(conversation_id, "and my other plan?")
    stored = chat.wait(gloomy)
    assert stored.word_count == len(GLOOMY.split()) and stored.sentiment < -0.5
    page = text(chat.get(f"/c/{conversation_id}"))
    assert f"{len(HAPPY.split())} words" in page and "positive tone (+0." in page
    assert "negative tone (-0." in page
    sign_up(chat, "ana")
    api = ApiClient(chat.app, api_token(chat))
    items = api.call("GET", f"/conversations/{conversation_id}/messages").get_json()["items"]
    answers = {m["id"]: m for m in items if m["role"] == "assistant"}
    assert answers[happy]["sentiment"] > 0.5 and answers[happy]["word_count"] == len(HAPPY.split())
    assert answers[gloomy]["sentiment"] == pytest.approx(stored.sentiment)


def test_days_are_the_identitys_days_and_the_api_has_the_page_s_figures(chat: Chat, upstream) -> None:  # noqa: ANN001
    sign_up(chat, "kenji")
    update_user(chat.app, user_named(chat.app, "kenji").id, time_zone="Asia/Tokyo")
    plain = "The train leaves at nine from platform two."
    upstream.script(Reply(tokens=tokens(HAPPY)), Reply(tokens=tokens(GLOOMY)), Reply(tokens=tokens(plain)))
    conversation_id, first = chat.start("one")
    chat.wait(first)
    second = chat.send(conversation_id, "two")
    chat.wait(second)
    third = chat.send(conversation_id, "three")
    chat.wait(third)
    tokyo_midnight = datetime.now(ZoneInfo("Asia/Tokyo")).replace(hour=0, minute=0, second=0, microsecond=0)
    # 23:30 yesterday in Tokyo is "today" in UTC for part of the day, but yesterday on Kenji's page.
    set_created(chat.app, first, (tokyo_midnight - timedelta(minutes=30)).astimezone(ZoneInfo("UTC")))
    set_created(chat.app, second, (tokyo_midnight + timedelta(minutes=30)).astimezone(ZoneInfo("UTC")))
    api = ApiClient(chat.app, api_token(chat))
    assert api.call("POST", f"/messages/{second}/feedback", {"rating": "up"}).status_code == 200
    assert api.call("POST", f"/messages/{third}/feedback", {"rating": "down"}).status_code == 200
    found = api.call("GET", "/stats").get_json()
    assert found["time_zone"] == "Asia/Tokyo" and len(found["days"]) == 30
    today, yesterday = found["days"][-1], found["days"][-2]
    assert today["day"] == tokyo_midnight.date().isoformat()
    assert (yesterday["answers"], today["answers"]) == (1, 2)
    assert yesterday["sentiment"] > 0.5 and today["sentiment"] < 0  # gloomy and neutral
    assert (today["up"], today["down"]) == (1, 1) and found["feedback"] == {"up": 1, "down": 1, "ratio": 0.5}
    assert found["tones"] == {"positive": 1, "neutral": 1, "negative": 1}
    assert [row["model"] for row in found["models"]] == ["fake-model"] and found["models"][0]["answers"] == 3
    assert sum(bucket["answers"] for bucket in found["ttft_ms"]) == 3
    assert found["conversations"] == 1  # the totals are still there

    page = chat.get("/stats").get_data(as_text=True)
    rows = dict(re.findall(r'<time datetime="([\d-]+)">[^<]*</time></th><td class="num">(\d+)</td>', page))
    assert rows[today["day"]] == "2" and rows[yesterday["day"]] == "1"
    assert "50% <span" in page and "1 positive 1 neutral, 1 negative" in text(chat.get("/stats"))


def test_charts_are_images_that_need_nothing_else(chat: Chat, upstream) -> None:  # noqa: ANN001
    chat.wait(chat.start("hello")[1])
    page = chat.get("/stats").get_data(as_text=True)
    images = re.findall(
        r'<img class="chart chart-(light|dark)" src="data:image/svg\+xml;base64,([^"]+)" alt="([^"]+)"', page
    )
    assert len(images) == 10 and {theme for theme, _, _ in images} == {"light", "dark"}
    for _, data, alt in images:
        svg = base64.b64decode(data).decode()
        assert svg.startswith("<svg") and ("table below" in alt or "table under" in alt)
        assert not re.search(r'(src|href)="(https?:)?//', svg), "a chart loads nothing from elsewhere"


def test_everyones_stats_are_for_administrators_only(make_app, upstream) -> None:  # noqa: ANN001
    app = make_app(ADMIN_USERS="root")
    ana, root = Chat(app), Chat(app)
    sign_up(ana, "ana")
    sign_up(root, "root")
    ana.wait(ana.start("mine")[1])
    assert ana.get("/stats?scope=all").status_code == 403
    assert "Only an administrator" in text(ana.get("/stats?scope=all"))
    assert ApiClient(app, api_token(ana)).call("GET", "/stats?scope=all").status_code == 403
    assert ApiClient(app, api_token(ana)).call("GET", "/stats?scope=everything").status_code == 422
    mine = ApiClient(app, api_token(root)).call("GET", "/stats").get_json()
    everyone = ApiClient(app, api_token(root)).call("GET", "/stats?scope=all").get_json()
    assert sum(d["answers"] for d in mine["days"]) == 0 and sum(d["answers"] for d in everyone["days"]) == 1
    assert "Show everyone" in root.get("/stats").get_data(as_text=True)
    assert "Show everyone" not in ana.get("/stats").get_data(as_text=True)


def test_a_new_visitor_sees_empty_stats_not_everyones(make_app, upstream) -> None:  # noqa: ANN001
    app = make_app()
    writer = Chat(app)
    writer.wait(writer.start("something")[1])
    page = text(Chat(app).get("/stats"))  # a guest with nothing stored yet
    assert "Answers 0" in page and "No answers in these days yet." in page


@pytest.mark.browser
def test_stats_page_passes_axe_in_both_themes_and_on_a_phone(browser, live_server, upstream) -> None:  # noqa: ANN001
    context = test_page.open_context(browser, live_server)
    page = context.new_page()
    page.goto("/")
    page.fill("#content", "hello")
    page.press("#content", "Enter")
    page.wait_for_selector('article.assistant[data-status="complete"]')
    page.goto("/stats")
    test_page.one_h1_and_landmarks(page)
    assert page.locator("img.chart:visible").count() == 5  # one image per chart: the theme's
    page.emulate_media(color_scheme="dark")
    assert page.locator("img.chart-dark:visible").count() == 5
    page.emulate_media(color_scheme="light")
    test_page.check_accessible(page, "stats")
    context.close()
