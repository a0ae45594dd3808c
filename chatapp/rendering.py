"""Markdown to safe HTML: markdown-it-py renders, Pygments highlights, nh3 sanitizes."""

from __future__ import annotations

from functools import lru_cache

import nh3
from markdown_it import MarkdownIt
from markupsafe import Markup, escape
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name, guess_lexer
from pygments.util import ClassNotFound

_FORMATTER = HtmlFormatter(nowrap=True)
_ALLOWED_TAGS = nh3.ALLOWED_TAGS | {"pre", "code", "span", "div", "table", "thead", "tbody", "tr", "th", "td", "hr"}
_ALLOWED_ATTRIBUTES = {
    **nh3.ALLOWED_ATTRIBUTES,
    "span": {"class"},
    "code": {"class"},
    "pre": {"class"},
    "div": {"class"},
}


def _highlight(code: str, lang: str, _attrs: str) -> str:
    try:
        lexer = get_lexer_by_name(lang) if lang else guess_lexer(code)
    except ClassNotFound:
        return ""  # markdown-it escapes the code itself
    return highlight(code, lexer, _FORMATTER)


_MD = (
    MarkdownIt("commonmark", {"highlight": _highlight, "html": False, "linkify": False})
    .enable("table")
    .enable("strikethrough")
)


@lru_cache(maxsize=2048)
def render_markdown(text: str) -> Markup:
    """Sanitized HTML for a message's Markdown (cached: finished messages do not change)."""
    html = _MD.render(text)
    clean = nh3.clean(
        html,
        tags=_ALLOWED_TAGS,
        attributes=_ALLOWED_ATTRIBUTES,
        link_rel="noopener noreferrer nofollow",
        url_schemes={"http", "https", "mailto"},
    )
    return Markup(clean)


def render_plain(text: str) -> Markup:
    """Escaped text, for user messages and text still streaming."""
    return escape(text)


def pygments_css() -> str:
    """Stylesheet for highlighted code."""
    return HtmlFormatter(style="friendly").get_style_defs(".md pre")
