"""The chat page as people use it, in a real Chromium: accessibility (axe-core), keyboard focus, the phone
drawer, dark mode, and the same page with JavaScript off (self-refresh anchored to the answer's end)."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest

from chatapp.extensions import db
from chatapp.models import Conversation, Image, User
from tests.clients import chromium
from tests.conftest import Chat, skip_or_fail
from tests.fake_upstream import Reply

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"

ANSWER = """Here is a short way to count words.

## Counting words

Use `collections.Counter`, then [the docs](https://docs.python.org/3/) for more:

```python
from collections import Counter

def top(words: list[str], n: int = 3) -> list[tuple[str, int]]:
    \"\"\"The n most common words.\"\"\"
    return Counter(words).most_common(n)  # highest first
```

- **Fast** for most files
- *Simple* to read

| Approach | Memory |
| --- | --- |
| read all | whole file |
| by line | one line |

> Deciding what a word is takes the thought.
"""


def chunks(text: str, size: int = 8) -> list[str]:
    """``text`` as streamed tokens."""
    return [text[i : i + size] for i in range(0, len(text), size)]


@pytest.fixture
def app(make_app):  # noqa: ANN001, ANN201
    """This module's app: a low message limit, so "too long" is quick to reach."""
    return make_app(MAX_USER_MESSAGE_TOKENS=60)


@pytest.fixture(scope="module")
def browser():  # noqa: ANN201
    with chromium() as browser:
        yield browser


def open_context(browser, live_server: str, **options):  # noqa: ANN001, ANN003, ANN201
    """A browser context on the app; ``bypass_csp`` lets the tests inject axe-core."""
    options.setdefault("viewport", {"width": 1280, "height": 800})
    context = browser.new_context(base_url=live_server, bypass_csp=True, reduced_motion="reduce", **options)
    context.set_default_timeout(15_000)
    return context


@pytest.fixture
def page(browser, live_server):  # noqa: ANN001, ANN201
    context = open_context(browser, live_server)
    yield context.new_page()
    context.close()


@pytest.fixture
def plain_page(browser, live_server):  # noqa: ANN001, ANN201
    """A page with JavaScript off, phone-sized."""
    context = open_context(browser, live_server, java_script_enabled=False, viewport={"width": 390, "height": 700})
    yield context.new_page()
    context.close()


# ---- helpers ------------------------------------------------------------------------------------------


def send(page, text: str) -> None:  # noqa: ANN001
    """Type into the composer and press Enter."""
    page.fill("#content", text)
    page.press("#content", "Enter")


def wait_idle(page) -> None:  # noqa: ANN001
    """Until no answer is being written and Send is back."""
    page.wait_for_selector("article.assistant")
    page.wait_for_function(
        "!document.querySelector('article[data-status=streaming]')"
        " && !!document.querySelector('#composer-actions .send')"
    )


def active(page, selector: str) -> bool:  # noqa: ANN001
    """Whether the focused element matches ``selector``."""
    return page.evaluate("s => !!document.activeElement && document.activeElement.matches(s)", selector)


def wait_focus(page, selector: str) -> None:  # noqa: ANN001
    page.wait_for_function("s => !!document.activeElement && document.activeElement.matches(s)", arg=selector)


def tab_to(page, selector: str, backwards: bool = False, limit: int = 25) -> None:  # noqa: ANN001
    """Press Tab (or Shift+Tab) until ``selector`` has focus, as a keyboard user would."""
    for _ in range(limit):
        if active(page, selector):
            return
        page.keyboard.press("Shift+Tab" if backwards else "Tab")
    assert active(page, selector), f"{selector} not reached by keyboard; focus is on {describe_focus(page)}"


def describe_focus(page) -> str:  # noqa: ANN001
    return page.evaluate(
        "(() => { const e = document.activeElement; return e ? e.outerHTML.slice(0, 120) : 'none' })()"
    )


def not_on_body(page) -> None:  # noqa: ANN001
    assert page.evaluate("document.activeElement && document.activeElement !== document.body"), "focus fell to <body>"


def axe_violations(page) -> list[str]:  # noqa: ANN001
    """Every axe-core violation on the page (all rules, WCAG 2.2 target size included), one line each."""
    if not AXE.exists():
        skip_or_fail(f"{AXE} is missing: run npm ci")
    if not page.evaluate("() => !!window.axe"):
        page.add_script_tag(path=str(AXE))
    return page.evaluate(
        """async () => {
          const options = {rules: {"target-size": {enabled: true}}, resultTypes: ["violations"]};
          const result = await axe.run(document, options);
          return result.violations.map(v => `${v.id} (${v.impact}): ${v.help}: ` +
            v.nodes.map(n => n.target.join(" ") + " " + (n.failureSummary || "")).join(" | "));
        }"""
    )


VARIANTS = [("light", 1280), ("dark", 1280), ("light", 390), ("dark", 390)]


def check_accessible(page, state: str) -> None:  # noqa: ANN001
    """axe-core finds nothing in light and dark, at 1280 px and at 390 px; nothing scrolls sideways."""
    problems = []
    for scheme, width in VARIANTS:
        page.emulate_media(color_scheme=scheme)
        page.set_viewport_size({"width": width, "height": 800})
        page.evaluate("new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")  # laid out
        problems += [f"{state}, {scheme}, {width} px: {v}" for v in axe_violations(page)]
        assert page.evaluate("document.documentElement.scrollWidth") <= width, f"{state} scrolls sideways at {width} px"
    page.emulate_media(color_scheme="light")
    page.set_viewport_size({"width": 1280, "height": 800})
    assert not problems, "\n".join(problems)


def one_h1_and_landmarks(page) -> None:  # noqa: ANN001
    assert page.locator("h1").count() == 1
    names = page.evaluate(
        """[...document.querySelectorAll('main, nav, aside, header[aria-label], section[aria-label], form[aria-label]')]
           .map(e => e.tagName + ':' + (e.getAttribute('aria-label') || ''))"""
    )
    assert len(names) == len(set(names)), names


# ---- axe-core over the main states --------------------------------------------------------------------


def test_new_chat_settings_and_confirmation_pass_axe(page, upstream) -> None:  # noqa: ANN001
    page.goto("/")
    one_h1_and_landmarks(page)
    check_accessible(page, "new chat")
    upstream.script(Reply(tokens=["Hi."]))
    send(page, "hello")
    wait_idle(page)
    page.goto("/settings")
    page.fill("#token-name", "my script")
    page.click("text=Create token")
    page.wait_for_selector("#new-token")
    page.goto("/settings")
    one_h1_and_landmarks(page)
    check_accessible(page, "settings")
    page.goto(page.locator(".conversation-item .menu-panel a.danger-link").first.get_attribute("href"))
    one_h1_and_landmarks(page)
    check_accessible(page, "delete confirmation")


def test_streaming_finished_versions_and_edit_pass_axe(page, upstream) -> None:  # noqa: ANN001
    page.goto("/")
    upstream.script(Reply(tokens=chunks(ANSWER, 4), delay=0.15))
    send(page, "How do I count words?")
    page.wait_for_function(
        "(document.querySelector('article[data-status=streaming]') || {}).textContent?.includes('Count')"
    )
    busy = page.locator("article.assistant").get_attribute("aria-busy")
    assert busy == "true"
    stop = page.locator("#composer-actions .stop").bounding_box()
    assert stop["width"] >= 44 and stop["height"] >= 44
    assert page.locator("#messages").get_attribute("aria-live") is None  # the list itself is not live
    check_accessible(page, "streaming")
    page.click("#composer-actions .stop")
    wait_idle(page)

    upstream.script(Reply(tokens=chunks(ANSWER)))
    page.click("article.assistant button.retry")
    wait_idle(page)
    page.wait_for_selector("article.assistant .code-block .code-head .code-copy")
    assert "2 / 2" in page.locator("article.assistant .version-count").inner_text()
    one_h1_and_landmarks(page)
    check_accessible(page, "finished with Markdown and code, versions")

    page.click("article.user a.edit")
    page.wait_for_selector("article.editing textarea")
    check_accessible(page, "edit")


def test_error_and_too_long_pass_axe(page, upstream) -> None:  # noqa: ANN001
    page.goto("/")
    upstream.script(Reply(status=429, error_message="slow down"))
    send(page, "hello")
    page.wait_for_selector('article.assistant[data-status="error"]')
    page.wait_for_function("document.getElementById('announcer').textContent.includes('rate limiting')")
    check_accessible(page, "error")

    send(page, "word " * 80)
    page.wait_for_selector('article.user[data-status="error"]')
    assert "tokens long" in page.inner_text("#composer-error")
    assert page.input_value("#content").startswith("word word")
    assert page.get_attribute("#content", "aria-invalid") == "true"
    check_accessible(page, "too long")


def test_stored_dark_theme_passes_axe(page, upstream) -> None:  # noqa: ANN001
    page.goto("/")
    upstream.script(Reply(tokens=chunks(ANSWER)))
    send(page, "count words")
    wait_idle(page)
    page.click(".theme-switch button[value=dark]")
    page.wait_for_function("document.documentElement.dataset.theme === 'dark'")
    page.emulate_media(color_scheme="light")  # the stored choice wins over the system's
    assert page.evaluate("getComputedStyle(document.documentElement).colorScheme") == "dark"
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(28, 28, 30)"
    assert axe_violations(page) == []
    page.reload()  # stored on the server, for this identity
    assert page.get_attribute("html", "data-theme") == "dark"
    assert page.get_attribute(".theme-switch button[value=dark]", "aria-pressed") == "true"


# ---- keyboard only -----------------------------------------------------------------------------------


def test_keyboard_walk_send_stop_continue_edit_retry_versions(page, upstream) -> None:  # noqa: ANN001
    page.goto("/")
    wait_focus(page, "#content")  # the box has focus on arrival
    page.goto("/settings")
    page.keyboard.press("Tab")  # from the top of a page, the first Tab finds the skip link
    assert active(page, ".skip-link") and page.locator(".skip-link").bounding_box()["y"] >= 0
    page.goto("/")
    page.focus(".skip-link")
    assert page.inner_text(".skip-link") == "Skip to the message box"
    page.keyboard.press("Enter")
    wait_focus(page, "#content")

    # Send: focus stays in the box.
    upstream.script(Reply(tokens=[f" word{i}" for i in range(300)], delay=0.03))
    page.keyboard.type("Tell me a long story")
    page.keyboard.press("Enter")
    page.wait_for_selector('article.assistant[data-status="streaming"]')
    wait_focus(page, "#content")
    page.wait_for_function("document.getElementById('announcer').textContent === 'Answer started'")

    # Stop: focus goes to the stopped answer.
    tab_to(page, "#composer-actions .stop")
    page.keyboard.press("Enter")
    wait_focus(page, 'article.assistant[data-status="stopped"]')
    page.wait_for_function("document.getElementById('announcer').textContent === 'Answer stopped'")

    # Continue: focus on the answer going on, and still there when it ends.
    answer_id = page.evaluate("document.activeElement.id")
    upstream.script(Reply(tokens=[" and", " the", " end."], delay=0.05))
    tab_to(page, f"#{answer_id} .continue")
    page.keyboard.press("Enter")
    wait_focus(page, f'#{answer_id}[data-status="streaming"]')
    page.wait_for_selector(f'#{answer_id}[data-status="complete"]')
    wait_focus(page, f"#{answer_id}")
    page.wait_for_function("document.getElementById('announcer').textContent === 'Answer finished'")

    # Edit: focus in its box; Escape cancels back to Edit; Save focuses the new answer.
    tab_to(page, "article.user a.edit", backwards=True)
    page.keyboard.press("Enter")
    wait_focus(page, "article.editing textarea")
    page.keyboard.press("Escape")
    wait_focus(page, "article.user a.edit")
    page.keyboard.press("Enter")
    wait_focus(page, "article.editing textarea")
    page.keyboard.press("Control+a")
    page.keyboard.type("A short story")
    upstream.script(Reply(tokens=[" Once", " upon", " a", " time."], delay=0.05))
    tab_to(page, "article.editing button.save")
    page.keyboard.press("Enter")
    wait_focus(page, "article.assistant")
    edited_answer = page.evaluate("document.activeElement.id")
    assert edited_answer != answer_id
    wait_idle(page)
    wait_focus(page, f"#{edited_answer}")

    # Retry: focus on the new version.
    upstream.script(Reply(tokens=[" Another", " take."], delay=0.05))
    tab_to(page, f"#{edited_answer} .retry")
    page.keyboard.press("Enter")
    page.wait_for_function(
        "id => document.activeElement.matches('article.assistant') && document.activeElement.id !== id",
        arg=edited_answer,
    )
    wait_idle(page)
    wait_focus(page, "article.assistant")
    not_on_body(page)

    # ‹ ›: focus stays on the button pressed, on the answer's and on the question's versions.
    tab_to(page, 'article.assistant .version[aria-label="Previous version"]')
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelector('article.assistant .version-count').textContent === '1 / 2'")
    wait_focus(page, 'article.assistant .version[aria-label="Previous version"]')
    tab_to(page, 'article.assistant .version[aria-label="Next version"]')
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelector('article.assistant .version-count').textContent === '2 / 2'")
    wait_focus(page, 'article.assistant .version[aria-label="Next version"]')
    tab_to(page, 'article.user .version[aria-label="Previous version"]', backwards=True)
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelector('article.user .version-count').textContent === '1 / 2'")
    wait_focus(page, 'article.user .version[aria-label="Previous version"]')
    assert "word0" in page.inner_text("#messages")  # the first story's branch is back

    # Send with the button: focus returns to the box, for the next message.
    tab_to(page, "#content")
    page.keyboard.type("One more")
    tab_to(page, "#composer-actions .send")
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelectorAll('article.user').length === 2")
    wait_focus(page, "#content")
    wait_idle(page)
    not_on_body(page)


# ---- phones ------------------------------------------------------------------------------------------


def test_phone_drawer_with_javascript_off(plain_page, upstream) -> None:  # noqa: ANN001
    page = plain_page
    page.goto("/")
    page.fill("#content", "first conversation")
    page.click("#composer-actions .send")
    page.wait_for_selector('article.assistant[data-status="complete"]')
    assert not page.locator("#sidebar").is_visible()  # folded away at 390 px
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.click("a.drawer-button")
    for link in ["a.new-chat", ".conversation-link", "a.settings-link"]:
        assert page.locator(f"#sidebar {link}").first.is_visible(), link
    page.click("#sidebar a.drawer-close")
    assert not page.locator("#sidebar").is_visible()
    page.click("a.drawer-button")
    page.click("#sidebar a.settings-link")
    page.wait_for_url("**/settings")
    assert page.locator("h1").inner_text() == "Settings"


def test_phone_drawer_with_javascript(browser, live_server, upstream) -> None:  # noqa: ANN001
    context = open_context(browser, live_server, viewport={"width": 390, "height": 800}, has_touch=True)
    page = context.new_page()
    try:
        page.goto("/")
        button = page.locator(".drawer-button.js-only")
        assert button.get_attribute("aria-expanded") == "false"
        button.click()
        page.wait_for_selector("#sidebar.open")
        assert button.get_attribute("aria-expanded") == "true"
        wait_focus(page, "#sidebar .drawer-close")
        assert page.evaluate("document.getElementById('main').inert")  # the page behind waits
        page.keyboard.press("Escape")
        wait_focus(page, ".drawer-button.js-only")
        assert not page.locator("#sidebar").is_visible()
        # Touch targets: 44 × 44 for the main actions, and the action row's at least 24 × 24.
        for selector in [".drawer-button.js-only", "#composer-actions .send", "label.attach", "#mic"]:
            box = page.locator(selector).bounding_box()
            assert box["width"] >= 44 and box["height"] >= 44, selector
        page.fill("#content", "hello")
        page.press("#content", "Enter")  # on a touch screen Enter is a new line; the button sends
        assert page.input_value("#content") == "hello\n" and upstream.requests == []
        page.click("#composer-actions .send")
        wait_idle(page)
        for selector in ["article.assistant .copy-message", "article.assistant .retry", "article.user a.edit"]:
            box = page.locator(selector).bounding_box()
            assert box["width"] >= 24 and box["height"] >= 24, selector
        assert page.locator("article.user a.edit").is_visible()  # shown without hovering on touch screens
    finally:
        context.close()


def test_header_and_content_fit_320_px(page, upstream) -> None:  # noqa: ANN001
    page.set_viewport_size({"width": 320, "height": 640})
    page.goto("/")
    upstream.script(Reply(tokens=chunks(ANSWER + "\n`" + "averyveryverylongidentifier" * 4 + "`\n")))
    send(page, "A question with a rather long title that must not push anything off the screen")
    wait_idle(page)
    for url in [page.url, "/settings", "/"]:
        page.goto(url)
        assert page.evaluate("document.documentElement.scrollWidth") <= 320, url
        header = page.locator(".topbar")
        assert page.evaluate("e => e.scrollWidth <= e.clientWidth", header.element_handle()), url


# ---- live region, headings, names --------------------------------------------------------------------


def test_headings_names_and_status(page, upstream) -> None:  # noqa: ANN001
    page.goto("/")
    upstream.script(Reply(tokens=["Short", " answer."], delay=0.05))
    send(page, "hi")
    wait_idle(page)
    page.wait_for_function("document.getElementById('announcer').textContent === 'Answer finished'")
    assert page.locator("[aria-live]").count() == 1  # the one status region
    assert page.locator("article.user h2").inner_text() == "You said"
    assert page.locator("article.assistant h2").inner_text() == "Assistant said"
    assert page.locator("#mic").inner_text() == "Speak"  # its name is what it shows
    assert page.evaluate("document.querySelector('#mic').getAttribute('aria-label')") is None
    assert page.get_attribute("#content", "placeholder") == "Message chatapp"  # no promise of Enter-to-send


def test_action_rows_appear_on_hover_and_keyboard_focus(page, upstream) -> None:  # noqa: ANN001
    page.goto("/")
    for question in ("first", "second"):
        send(page, question)
        page.wait_for_function(
            "n => document.querySelectorAll('article.assistant').length === n", arg=1 + (question == "second")
        )
        wait_idle(page)
    page.mouse.move(0, 0)
    edit = page.locator("article.user >> nth=0 >> a.edit")

    def opacity() -> str:
        return page.evaluate("e => getComputedStyle(e).opacity", edit.element_handle())

    page.wait_for_function("e => getComputedStyle(e).opacity === '0'", arg=edit.element_handle())  # out of the way
    assert page.locator("article.assistant >> nth=-1 >> .retry").is_visible()  # the latest answer's row stays
    edit.focus()
    page.wait_for_function("e => getComputedStyle(e).opacity === '1'", arg=edit.element_handle())  # keyboard focus
    page.locator("#content").focus()
    page.wait_for_function("e => getComputedStyle(e).opacity === '0'", arg=edit.element_handle())
    page.locator("article.user >> nth=0").hover()
    page.wait_for_function("e => getComputedStyle(e).opacity === '1'", arg=edit.element_handle())  # hover
    assert opacity() == "1"


def test_code_block_copy_and_contrast_of_every_highlight_colour(page, upstream) -> None:  # noqa: ANN001
    page.goto("/")
    upstream.script(Reply(tokens=chunks(ANSWER)))
    send(page, "code please")
    wait_idle(page)
    head = page.locator(".code-block .code-head")
    assert head.locator(".code-lang").inner_text() == "python"
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    head.locator(".code-copy").click()
    page.wait_for_function("document.querySelector('.code-copy').textContent.includes('Copied')")
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied.startswith("from collections import Counter") and copied.rstrip().endswith("# highest first")
    # The Copy button sits in the head, above the code: it never covers text.
    button, code = page.locator(".code-copy").bounding_box(), page.locator(".code-block pre").bounding_box()
    assert button["y"] + button["height"] <= code["y"]
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        low = page.evaluate(CONTRAST_OF_TOKENS)
        assert low == [], f"{scheme}: {low}"


# Every token colour that pygments.css can give, measured against the code background in the browser.
CONTRAST_OF_TOKENS = """(() => {
  const names = ['comment','keyword','string','number','function','type','attribute','special','operator',
                 'error','inserted','deleted'];
  const style = getComputedStyle(document.documentElement);
  const rgb = c => { const d = document.createElement('div'); d.style.color = c; document.body.append(d);
    const m = getComputedStyle(d).color.match(/\\d+/g).map(Number); d.remove(); return m; };
  const linear = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
  const lum = ([r, g, b]) => 0.2126 * linear(r) + 0.7152 * linear(g) + 0.0722 * linear(b);
  const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
  const low = [];
  for (const bg of ['--code-bg', '--code-head']) for (const n of names) {
    const r = ratio(rgb(style.getPropertyValue('--hl-' + n)), rgb(style.getPropertyValue(bg)));
    if (r < 4.5) low.push(`${n} on ${bg}: ${r.toFixed(2)}`);
  }
  return low;
})()"""


def test_every_colour_is_defined_for_both_themes() -> None:
    app_css = (ROOT / "static" / "app.css").read_text()
    blocks = {
        name: set(re.findall(r"(--[a-z-]+):", re.search(pattern + r" \{(.*?)\n\s*\}", app_css, re.S | re.M).group(1)))
        for name, pattern in [
            ("light", r"^:root"),
            ("dark", r":root\[data-theme=\"dark\"\]"),
            ("system dark", r":root:not\(\[data-theme\]\)"),
        ]
    }
    assert blocks["dark"] == blocks["system dark"]  # the chosen dark theme and the system's are the same set
    assert blocks["dark"] <= blocks["light"]  # every colour has a light and a dark value
    assert len(blocks["dark"]) > 30
    used = set(re.findall(r"var\((--hl-[a-z]+)\)", (ROOT / "static" / "pygments.css").read_text()))
    assert {"--hl-comment", "--hl-keyword", "--hl-string"} <= used <= blocks["dark"]


# ---- without JavaScript ------------------------------------------------------------------------------


def test_javascript_off_refresh_lands_on_the_answer_end_and_can_be_held(plain_page, app, upstream) -> None:  # noqa: ANN001
    page = plain_page
    page.goto("/")
    upstream.script(Reply(tokens=[f"Line {i} of a long answer.\n\n" for i in range(400)], delay=0.03))
    page.fill("#content", "a long answer please")
    page.click("#composer-actions .send")
    page.wait_for_url(re.compile(r"refresh=1#live$"))
    first = page.locator('meta[http-equiv="refresh"]').get_attribute("content")
    assert first.startswith("2; ") and first.endswith("refresh=2#live")  # the interval grows: 1 s, then 2 s
    page.wait_for_url(re.compile(r"refresh=2#live$"))
    page.wait_for_function("document.querySelector('article.assistant').textContent.includes('Line 40 ')")
    assert answer_end_in_view(page)
    assert page.evaluate("document.getElementById('messages').scrollTop") > 0  # not at the top of the list

    hold = page.locator(".busy-note a")
    assert hold.inner_text() == "Stop refreshing"
    hold.click()
    page.wait_for_url(re.compile(r"hold=1#live$"))
    assert page.locator('meta[http-equiv="refresh"]').count() == 0  # held where the reader is
    assert answer_end_in_view(page)
    assert page.locator(".busy-note a").inner_text() == "Refresh now"
    assert not page.locator("#content").is_visible()  # nothing to type into while the answer is written
    page.click("#composer-actions .stop")
    page.wait_for_selector('article.assistant[data-status="stopped"]')
    assert page.locator("#content").is_visible()


def answer_end_in_view(page) -> bool:  # noqa: ANN001
    """The end of the answer being written is on screen, above the composer."""
    return page.evaluate(
        """(() => { const end = document.getElementById('live').getBoundingClientRect();
          const composer = document.querySelector('.composer-area').getBoundingClientRect();
          const list = document.getElementById('messages').getBoundingClientRect();
          return end.top >= list.top && end.top <= composer.top; })()"""
    )


def test_refresh_interval_grows_and_hold_stops_it(chat: Chat, upstream) -> None:  # noqa: ANN001
    upstream.script(Reply(tokens=[f" w{i}" for i in range(200)], delay=0.05))
    conversation_id, answer_id = chat.start("go")
    seconds = []
    for count in (0, 1, 4, 5, 30):
        page = chat.get(f"/c/{conversation_id}?refresh={count}").get_data(as_text=True)
        found = re.search(r'http-equiv="refresh" content="(\d+); url=/c/\d+\?refresh=(\d+)#live"', page)
        seconds.append(int(found.group(1)))
        assert int(found.group(2)) == count + 1
    assert seconds == [1, 2, 2, 3, 3]
    held = chat.get(f"/c/{conversation_id}?hold=1").get_data(as_text=True)
    assert 'http-equiv="refresh"' not in held and "Refresh now" in held
    assert 'id="live"' in held
    chat.post(f"/messages/{answer_id}/stop")
    done = chat.get(f"/c/{conversation_id}?refresh=5").get_data(as_text=True)
    assert 'http-equiv="refresh"' not in done  # the last refresh lands on the conversation's end
    assert done.index('id="live"') > done.index(f'id="message-{answer_id}"')


def test_javascript_off_too_long_message_comes_back_beside_the_composer(plain_page, upstream) -> None:  # noqa: ANN001
    page = plain_page
    page.goto("/")
    page.fill("#content", "first")
    page.click("#composer-actions .send")
    page.wait_for_selector('article.assistant[data-status="complete"]')
    conversation_path = urlsplit(page.url).path
    page.fill("#content", "word " * 80)
    page.click("#composer-actions .send")
    page.wait_for_selector("#composer-error .error")
    assert urlsplit(page.url)[2:4] == (conversation_path, "")  # the conversation's address, not the form's
    assert page.input_value("#content").strip() == ("word " * 80).strip()
    assert page.locator("#composer-error").is_visible()
    box, viewport = page.locator("#composer-error").bounding_box(), page.viewport_size
    assert box["y"] >= 0 and box["y"] + box["height"] <= viewport["height"]  # in view
    page.reload()  # a reload neither resends nor loses it
    assert page.input_value("#content").strip() == ("word " * 80).strip()


def test_example_prompts_fill_the_composer(browser, live_server, upstream) -> None:  # noqa: ANN001
    for javascript in (False, True):
        context = open_context(browser, live_server, java_script_enabled=javascript)
        page = context.new_page()
        try:
            page.goto("/")
            example = page.locator("a.example").first
            prompt = example.inner_text()
            assert example.get_attribute("href").startswith("/?prompt=")
            example.click()
            page.wait_for_function("p => document.getElementById('content').value === p", arg=prompt)
            assert upstream.requests == []  # filled, not sent
        finally:
            context.close()


# ---- the sidebar, themes, images (no browser needed) ---------------------------------------------------


def test_sidebar_groups_by_date_in_the_identity_time_zone(app) -> None:  # noqa: ANN001
    from chatapp.views.theme import date_groups

    now = datetime(2026, 3, 10, 23, 30, tzinfo=UTC)  # already 11 March in Kiritimati (UTC+14)

    def at(day: int, hour: int) -> Conversation:
        return Conversation(title=f"{day}/{hour}", updated_at=datetime(2026, 3, day, hour))

    conversations = [at(10, 20), at(10, 2), at(9, 12), at(5, 12), at(1, 12)]
    with app.app_context():
        utc = date_groups(conversations, SimpleNamespace(time_zone="UTC"), now)
        assert [(g, [c.title for c in cs]) for g, cs in utc] == [
            ("Today", ["10/20", "10/2"]),
            ("Yesterday", ["9/12"]),
            ("Previous 7 days", ["5/12"]),
            ("Older", ["1/12"]),
        ]
        east = date_groups(conversations, SimpleNamespace(time_zone="Pacific/Kiritimati"), now)
        assert [(g, [c.title for c in cs]) for g, cs in east][:2] == [
            ("Today", ["10/20"]),
            ("Yesterday", ["10/2", "9/12"]),
        ]
        assert date_groups(conversations, SimpleNamespace(time_zone="Not/AZone"), now) == utc


def test_sidebar_titles_rename_and_delete_work_from_the_list(chat: Chat) -> None:
    conversation_id, answer_id = chat.start("A conversation with a long title that the sidebar shortens")
    chat.wait(answer_id)
    page = chat.get("/").get_data(as_text=True)
    sidebar = page.split('id="sidebar"', 1)[1].split("</nav>", 1)[0]
    assert "<h2" in sidebar and ">Today</h2>" in sidebar
    assert 'title="A conversation with a long title that the sidebar shortens"' in sidebar
    assert f'href="/c/{conversation_id}?rename=1"' in sidebar and f'href="/c/{conversation_id}/delete"' in sidebar
    renaming = chat.get(f"/c/{conversation_id}?rename=1").get_data(as_text=True)
    assert f'action="/c/{conversation_id}/rename"' in renaming and 'id="title"' in renaming


def test_theme_is_stored_per_identity_and_in_the_session_before_a_user_row(app, chat: Chat) -> None:  # noqa: ANN001
    page = chat.get("/").get_data(as_text=True)
    assert "data-theme" not in page.split(">", 2)[1]  # follows the system
    assert chat.post("/theme", {"theme": "dark", "next": "/settings"}).headers["Location"] == "/settings"
    assert '<html lang="en" data-theme="dark">' in chat.get("/").get_data(as_text=True)
    other_browser = Chat(app)
    other_browser.client.set_cookie("session", chat.client.get_cookie("session").value)
    assert 'data-theme="dark"' in other_browser.get("/").get_data(as_text=True)  # the identity's, not the browser's
    stranger = Chat(app)
    assert 'data-theme="dark"' not in stranger.get("/").get_data(as_text=True)
    assert chat.post("/theme", {"theme": "system", "next": "https://elsewhere.example/"}).headers["Location"] == "/"
    assert "data-theme" not in chat.get("/").get_data(as_text=True).split(">", 2)[1]
    assert chat.post("/theme", {"theme": "purple"}).status_code == 422

    # Before the identity has a row (guests made lazily), the choice is kept in the session.
    with app.app_context():
        db.session.execute(db.delete(User))
        db.session.commit()
    assert chat.post("/theme", {"theme": "light"}).status_code == 303
    assert 'data-theme="light"' in chat.get("/").get_data(as_text=True)


def png(colour: tuple[int, int, int]) -> io.BytesIO:
    from PIL import Image as PILImage

    data = io.BytesIO()
    PILImage.new("RGB", (8, 8), colour).save(data, format="PNG")
    data.seek(0)
    return data


def test_images_get_alt_text_from_the_description_or_the_file_name(chat: Chat) -> None:
    conversation_id, answer_id = chat.start("first")
    chat.wait(answer_id)
    response = chat.post(
        f"/c/{conversation_id}/messages",
        {
            "content": "look",
            "images": [(png((255, 0, 0)), "red square.png"), (png((0, 0, 255)), "../../IMG_0042.png")],
            "image_alt": ["A red square on nothing", ""],
        },
        content_type="multipart/form-data",
    )
    assert response.status_code == 303
    chat.wait(int(response.headers["Location"].rsplit("-", 1)[1]))
    with chat.app.app_context():
        assert [i.alt for i in db.session.scalars(db.select(Image).order_by(Image.id))] == [
            "A red square on nothing",
            "IMG_0042.png",
        ]
    page = chat.get(f"/c/{conversation_id}").get_data(as_text=True)
    assert 'alt="A red square on nothing"' in page and 'alt="IMG_0042.png"' in page
    with chat.app.app_context():
        user_message = db.session.scalars(db.select(Image.message_id)).first()
    chat.wait(
        int(chat.post(f"/messages/{user_message}/edit", {"content": "look again"}).headers["Location"].split("-")[-1])
    )
    with chat.app.app_context():  # an edited version keeps its images, and their descriptions
        assert [i.alt for i in db.session.scalars(db.select(Image).order_by(Image.id))][2:] == [
            "A red square on nothing",
            "IMG_0042.png",
        ]


def test_image_descriptions_from_the_previews(page, upstream, tmp_path) -> None:  # noqa: ANN001
    from PIL import Image as PILImage

    path = tmp_path / "sunset.png"
    PILImage.new("RGB", (16, 16), (250, 120, 40)).save(path)
    page.goto("/")
    send(page, "first")
    wait_idle(page)
    page.set_input_files("#images", [str(path)])
    page.fill("#previews input[name=image_alt]", "An orange sunset")
    assert page.get_attribute("#previews input", "aria-label") == "Description of sunset.png (optional)"
    send(page, "what is this?")
    page.wait_for_selector("article.user .images img")
    assert page.get_attribute("article.user >> nth=1 >> img", "alt") == "An orange sunset"
