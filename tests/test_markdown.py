"""Markdown: code blocks, math, tables, sanitizing; and Markdown rendered while the answer streams."""

from __future__ import annotations

import html
import re
import threading
from html.parser import HTMLParser

import pytest

from chatapp import streaming_markdown
from chatapp.rendering import markdown_html, render_markdown, split_blocks
from tests import test_browser
from tests.conftest import Chat
from tests.fake_upstream import Reply
from tests.sse import Page, collect, message_content, split_out_of_band, visible_text
from tests.test_browser import answer_text

browser, browser_page = test_browser.browser, test_browser.page  # the Chromium fixtures

DOCUMENT = """# A title

Some **bold**, `code` and $x^2$ inline. It costs $5 and $10.

- one
- two

- three, after a blank line: still the same (loose) list

1. first

2. second
   continued

```python
def f(x):

    return x * 2  # a blank line inside the fence
```

| left | right |
|:-----|------:|
| a    | 1     |

> a quote
> over two lines

$$
\\frac{1}{2} + \\sqrt{y}
$$

---

    indented code

Last paragraph.
"""

HOSTILE = (
    "<script>window.hacked = 1</script>\n\n"
    '<img src=x onerror="window.hacked = 2">\n\n'
    '<svg onload="window.hacked = 3"><circle r="5"/></svg>\n\n'
    '[click](javascript:window.hacked=4) and <a href="javascript:window.hacked=5">link</a>\n\n'
    '<b onclick="window.hacked = 6">raw html</b> <div hx-get="/" hx-trigger="load">htmx</div>\n\n'
    "```html\n<script>window.hacked = 7</script>\n```\n\n"
    "$\\href{javascript:window.hacked=8}{x}$ and $\\style{color:red}{y}$\n"
)


class _Elements(HTMLParser):
    def __init__(self, markup: str) -> None:
        super().__init__()
        self.found: list[tuple[str, dict]] = []
        self.feed(markup)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.found.append((tag, dict(attrs)))


def dangers(markup: str) -> list:
    """Elements or attributes in ``markup`` that could run or load anything."""
    bad = []
    for tag, attrs in _Elements(markup).found:
        if tag in {"script", "svg", "img", "iframe", "object", "style", "a", "b", "form", "input"}:
            bad.append(tag)
        for name, value in attrs.items():
            if name.startswith(("on", "hx-", "href", "src", "style", "xlink")) or "javascript" in (value or ""):
                bad.append((tag, name, value))
    return bad


# -- rendering -----------------------------------------------------------------------------------------
def test_code_block_markup_with_and_without_a_language() -> None:
    html = str(render_markdown("```python\nprint('hi')\n```\n\n```\nplain < text\n```\n\n```nosuch\nx\n```"))
    blocks = re.findall(r'<div class="code-block">.*?</pre></div>', html, re.S)
    assert len(blocks) == 3
    assert blocks[0].startswith(
        '<div class="code-block"><div class="code-head"><span class="code-lang">python</span></div>'
        '<pre><code class="language-python"><span class="nb">print</span>'
    )
    plain = '<div class="code-block"><div class="code-head"></div><pre><code>plain &lt; text\n</code></pre></div>'
    assert blocks[1] == plain
    assert 'class="code-lang"' not in blocks[2] and "language-" not in blocks[2]


def test_math_becomes_mathml_and_prices_stay_text() -> None:
    html = str(render_markdown("Area $\\pi r^2$ here.\n\n$$\n\\frac{a}{b}\n$$\n\nIt costs $5 and $10, or $ 3 $."))
    assert '<math display="inline"><mrow><mi>π</mi><msup><mi>r</mi><mn>2</mn></msup></mrow></math>' in html
    assert '<div class="math-block"><math display="block"><mrow><mfrac>' in html
    assert "<p>It costs $5 and $10, or $ 3 $.</p>" in html
    assert str(render_markdown("$5 and $10")) == "<p>$5 and $10</p>\n"
    assert "<code>\\frac{</code>" in str(render_markdown("broken $\\frac{$ math"))  # shown as typed


def test_tables_and_quotes_render_as_html() -> None:
    html = str(render_markdown(DOCUMENT))
    assert '<th style="text-align:left">left</th>' in html and '<td style="text-align:right">1</td>' in html
    assert "<blockquote>\n<p>a quote\nover two lines</p>\n</blockquote>" in html


def test_sanitizing_keeps_nothing_that_runs() -> None:
    html = str(render_markdown(HOSTILE))
    assert not dangers(html), html
    assert "&lt;script&gt;" in html  # shown as text, inert
    assert html.count("<math") == 2


def test_finished_blocks_render_as_the_whole_does() -> None:
    """Rendering the blocks one by one gives the same HTML as rendering the text at once, and text that
    arrives piece by piece splits exactly as the whole does."""
    blocks, tail = split_blocks(DOCUMENT)
    assert len(blocks) == 8
    pieces = "".join(markdown_html(DOCUMENT[start:end]) for start, end, _ in blocks) + markdown_html(DOCUMENT[tail:])
    assert pieces == markdown_html(DOCUMENT)
    lists = [DOCUMENT[s:e] for s, e, _ in blocks if DOCUMENT[s:e].startswith("- one")]
    assert lists and "- three" in lists[0]  # the loose list is one block

    found: list = []
    cut = 0
    for end in range(1, len(DOCUMENT) + 1):  # one character at a time
        new, cut = split_blocks(DOCUMENT[:end], cut)
        found += new
        assert all(decided <= end for *_, decided in new)
    assert found == blocks
    for start, end, decided in blocks:  # finished exactly from its decided length on
        assert (start, end, decided) in split_blocks(DOCUMENT[:decided])[0]
        assert (start, end, decided) not in split_blocks(DOCUMENT[: decided - 1])[0]


# -- streaming over the page's event stream ------------------------------------------------------------
def _tokens(text: str) -> list[str]:
    """Text cut into small tokens, the way a model sends it."""
    return re.findall(r"\s*\S{1,6}|\s+", text)


def test_stream_shows_formatted_html_and_ends_as_a_reload(chat: Chat, upstream) -> None:  # noqa: ANN001
    text = "Some **bold** words.\n\n```python\nx = 1\n```\n\n$e^x$ and more."
    upstream.script(Reply(tokens=_tokens(text), delay=0.3, first_delay=0.2))  # every token its own update
    conversation_id, answer_id = chat.start("format please")
    page, events = collect(chat.events(answer_id))
    updates = [e for e in events if e.event == "tail"]
    bold = next(i for i, e in enumerate(updates) if "<strong>bold</strong>" in e.data)
    assert bold < len(updates) - 3  # formatted while the answer was still being written
    assert '<div class="code-block">' in page.streamed and "<math" in page.streamed
    # No jump at the end: what streamed is exactly the final render, which is exactly a reload's.
    assert page.streamed == str(render_markdown(text)).strip()
    assert page.html == str(render_markdown(text))
    reload = chat.get(f"/c/{conversation_id}").get_data(as_text=True)
    article = re.search(rf'<article id="message-{answer_id}".*?</article>', reload, re.S).group(0)
    assert article in events[-1].data  # the final event carries the message exactly as a reload shows it
    assert message_content(article) == page.html


def test_finished_blocks_are_sent_once_and_resume_gets_what_is_missing(chat: Chat, upstream) -> None:  # noqa: ANN001
    paragraphs = [f"Paragraph {n} has a few words in it." for n in range(8)]
    text = "\n\n".join(paragraphs)
    upstream.script(Reply(tokens=_tokens(text), delay=0.03, first_delay=0.2))
    _, answer_id = chat.start("paragraphs")
    first, events = collect(chat.events(answer_id), stop_after=4)
    had = first.offset
    assert first.blocks, "some paragraphs were finished and sent as blocks"
    page, resumed = collect(chat.events(answer_id, **{"Last-Event-ID": str(had)}), page=first)
    # The page may show text past its last render: a render replaces it before any more text comes.
    assert [e.event for e in resumed if e.event in ("tail", "text")][0] == "tail"
    updates = [e for e in resumed if e.event == "tail"]
    assert updates and int(updates[0].id) > had
    # Exactly the blocks finished after the page's offset, each once, in order.
    sent_again = "".join(split_out_of_band(e.data)[0] for e in updates)
    finished = [(s, e) for s, e, decided in split_blocks(text[: page.offset])[0] if decided > had]
    assert sent_again == "".join(markdown_html(text[s:e]) for s, e in finished)
    assert page.blocks.count("<p>Paragraph 0 ") == 1
    assert visible_text(page.blocks + page.tail) == visible_text(markdown_html(text[: page.offset]))
    assert visible_text(page.streamed) == visible_text(markdown_html(text))  # and the text after the render
    assert page.text == visible_text(markdown_html(text))


def test_the_pages_own_reconnect_resumes_from_its_last_render(chat: Chat, upstream) -> None:  # noqa: ANN001
    # The page keeps its sse-connect URL at ?after=<last render>&resumed=1 for the SSE extension's reconnect.
    text = "\n\n".join(f"Paragraph {n} has a few words in it." for n in range(8))
    upstream.script(Reply(tokens=_tokens(text), delay=0.03, first_delay=0.2))
    _, answer_id = chat.start("paragraphs")
    first, _ = collect(chat.events(answer_id), stop_after=4)
    assert first.blocks, "the page has finished blocks"
    page, resumed = collect(chat.events(answer_id, f"?after={first.offset}&resumed=1"), page=first)
    assert [e.event for e in resumed if e.event in ("tail", "text")][0] == "tail"
    assert page.blocks.count("<p>Paragraph 0 ") == 1 and page.text == visible_text(markdown_html(text))


def test_words_keep_flowing_between_renders_as_plain_text(chat: Chat, upstream) -> None:  # noqa: ANN001
    text = "\n\n".join(f"Paragraph {n} has **a few** words <in> it." for n in range(6))
    upstream.script(Reply(tokens=_tokens(text), delay=0.02, first_delay=0.2))
    _, answer_id = chat.start("fast words")
    page, events = collect(chat.events(answer_id))
    updates = [e for e in events if e.event in ("tail", "text")]
    texts = [e for e in updates if e.event == "text"]
    assert len(texts) > len(updates) / 2  # most updates are plain text; renders come four times a second
    # After each render, the text events continue exactly where it ended, escaped, with no gap or repeat;
    # the render's HTML ends without the space its text ended with, so the first words get it back
    # (else they would run into its last word: "word59word60").
    offset, shown = 0, ""
    for event in updates:
        if event.event == "tail":
            offset, shown = int(event.id), ""
        else:
            shown += html.unescape(event.data)
            space = " " if text[offset - 1 : offset].isspace() else ""
            assert (space + text[offset:]).startswith(shown), (offset, shown)
            assert "<in>" not in event.data  # plain text, never markup
    assert page.text == visible_text(markdown_html(text))


def test_words_after_a_render_never_run_into_its_last_word(chat: Chat, upstream) -> None:  # noqa: ANN001
    # Tokens that end in a space ("word5 "): a render of "… word5 " shows "… word5" (HTML drops the
    # trailing space), and the text after it must not read "word5word6".
    upstream.script(Reply(tokens=[f"word{n} " for n in range(60)], delay=0.02, first_delay=0.2))
    _, answer_id = chat.start("spaced words")
    _, events = collect(chat.events(answer_id))
    shown, checked = "", 0
    for event in events:
        if event.event == "tail":
            shown = visible_text(event.data)
        elif event.event == "text":
            shown += html.unescape(event.data)
            checked += 1
            assert not re.search(r"word\d+word", shown), shown
    assert checked > 5  # words came between renders


def test_one_render_per_update_however_many_viewers(chat: Chat, upstream) -> None:  # noqa: ANN001
    text = "\n\n".join(f"Block {n} of the answer." for n in range(6))
    counts = []
    for viewers in (1, 2):
        upstream.script(Reply(tokens=_tokens(text), delay=0.05, first_delay=0.3))
        _, answer_id = chat.start(f"{viewers} viewers")
        before = streaming_markdown.RENDERS.copy()
        streams = [chat.events(answer_id) for _ in range(viewers)]
        pages: list[Page] = [Page() for _ in streams]
        received: list[list] = [[] for _ in streams]
        readers = [
            threading.Thread(target=lambda s=s, p=p, r=r: r.extend(collect(s, page=p)[1]))
            for s, p, r in zip(streams, pages, received, strict=True)
        ]
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join(20)
        renders = streaming_markdown.RENDERS - before
        ids = [{e.id for e in events if e.event == "tail"} for events in received]
        rendered = max(int(i) for i in set().union(*ids))
        assert renders["block"] == len(split_blocks(text[:rendered])[0])  # each finished block once
        assert renders["tail"] == len(set().union(*ids))  # each render went to the viewers that needed it
        assert all(p.text == pages[0].text == visible_text(markdown_html(text)) for p in pages)
        counts.append(renders["tail"])
    one, two = counts
    assert two <= one + 2, counts  # two viewers cost what one does
    assert two < len(_tokens(text))  # and not one render per token


def test_streamed_fragments_are_sanitized(chat: Chat, upstream) -> None:  # noqa: ANN001
    upstream.script(Reply(tokens=_tokens(HOSTILE), delay=0.01))
    _, answer_id = chat.start("be nasty")
    page, events = collect(chat.events(answer_id))
    updates = [e for e in events if e.event == "tail"]
    assert len(updates) > 3
    texts = [e.data for e in events if e.event == "text"]
    for fragment in [part for e in updates for part in split_out_of_band(e.data)] + texts + [page.html]:
        assert not dangers(fragment), fragment
    assert "&lt;script&gt;" in page.html


# -- in Chromium -------------------------------------------------------------------------------------------
@pytest.mark.browser
def test_chromium_shows_markdown_as_it_streams_and_the_reload_matches(browser_page, app, upstream) -> None:  # noqa: ANN001
    text = "Here is **bold** text.\n\n" + " ".join(f"word{i}" for i in range(40)) + "\n\n$a^2$ done."
    upstream.script(Reply(tokens=_tokens(text), delay=0.05))
    browser_page.goto("/")
    browser_page.fill("#content", "show me")
    browser_page.press("#content", "Enter")
    browser_page.wait_for_selector('article.assistant[data-status="streaming"] .content strong')
    assert browser_page.locator("article.assistant .content strong").inner_text() == "bold"
    assert "**" not in answer_text(browser_page)
    assert browser_page.locator('article.assistant[data-status="streaming"]').count() == 1  # still being written
    # Between renders the words that arrived show as plain text after the tail.
    browser_page.wait_for_function(
        "() => [...document.querySelectorAll('.streaming-md .pending')].some(e => e.textContent.trim())"
    )
    # A reconnect (a new EventSource on the sse-connect URL) would resume from the last render.
    browser_page.wait_for_selector('article.assistant[sse-connect*="resumed=1"]', state="attached")
    source = browser_page.locator("article.assistant[sse-connect]").get_attribute("sse-connect")
    assert re.search(r"after=([1-9]\d*)&resumed=1", source), source
    # Once the next paragraph begins, the first is a finished block (moved out of the tail, shown once).
    browser_page.wait_for_selector('article.assistant[data-status="streaming"] .blocks strong')
    assert browser_page.locator("article.assistant .content strong").count() == 1
    browser_page.wait_for_selector('article.assistant[data-status="complete"]', timeout=15_000)
    assert browser_page.locator("article.assistant .content math").count() == 1
    final = browser_page.locator("article.assistant .content").inner_html()
    browser_page.reload()
    assert browser_page.locator("article.assistant .content").inner_html() == final


@pytest.mark.browser
def test_chromium_runs_nothing_from_an_answer(browser_page, app, upstream) -> None:  # noqa: ANN001
    upstream.script(Reply(tokens=_tokens(HOSTILE), delay=0.02))
    browser_page.goto("/")
    browser_page.fill("#content", "be nasty")
    browser_page.press("#content", "Enter")
    browser_page.wait_for_selector('article.assistant[data-status="streaming"]')
    browser_page.wait_for_selector('article.assistant[data-status="complete"]', timeout=15_000)
    assert browser_page.evaluate("window.hacked") is None
    content = browser_page.locator("article.assistant .content")
    # Nothing from the answer: the page's own code-block head (language, Copy and its icon) is not in it.
    hostile = "script, svg:not(.code-head *), img, a, [onclick], [onerror], [hx-get]"
    assert content.locator(hostile).count() == 0
    assert "window.hacked = 7" in content.inner_text()  # the code is shown, as text
