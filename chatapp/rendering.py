"""Markdown to safe HTML: markdown-it-py renders, Pygments highlights, latex2mathml writes math, nh3 sanitizes."""

from __future__ import annotations

import re
from functools import lru_cache

import nh3
from latex2mathml.converter import convert as latex_to_mathml
from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml, unescapeAll
from markupsafe import Markup, escape
from mdit_py_plugins.dollarmath import dollarmath_plugin
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_all_lexers, get_lexer_by_name
from pygments.token import STANDARD_TYPES
from pygments.util import ClassNotFound

_FORMATTER = HtmlFormatter(nowrap=True)

# MathML as latex2mathml writes it. Left out on purpose: href (\href), class and style (\class,
# \style), mathcolor/mathbackground (\color), maction, semantics/annotation-xml (can carry HTML).
_MATHML_TAGS = {
    "math", "mrow", "mi", "mn", "mo", "ms", "mtext", "mspace", "msub", "msup", "msubsup", "mfrac",
    "msqrt", "mroot", "mstyle", "mtable", "mtr", "mtd", "mover", "munder", "munderover", "mpadded",
    "mphantom", "menclose", "merror", "mmultiscripts", "mprescripts", "none",
}  # fmt: skip
_MATHML_ATTRIBUTES = {
    "mathvariant", "mathsize", "displaystyle", "scriptlevel", "stretchy", "fence", "separator", "accent",
    "accentunder", "largeop", "movablelimits", "symmetric", "form", "lspace", "rspace", "minsize", "maxsize",
    "width", "height", "depth", "voffset", "linethickness", "notation", "columnalign", "columnlines",
    "columnspacing", "rowspacing", "rowalign", "frame", "linebreak",
}  # fmt: skip
_LANGUAGES = {alias for _name, aliases, _files, _mimes in get_all_lexers() for alias in aliases}
# What markdown-it writes from Markdown (raw HTML is off), and nothing else.
_TAGS = {
    "p", "h1", "h2", "h3", "h4", "h5", "h6", "em", "strong", "s", "code", "pre", "a", "img", "br", "hr",
    "ul", "ol", "li", "blockquote", "table", "thead", "tbody", "tr", "th", "td", "div", "span",
}  # fmt: skip
_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title"},
    "ol": {"start"},
    "th": {"style"},  # table column alignment, reduced to text-align below
    "td": {"style"},
    **{tag: _MATHML_ATTRIBUTES for tag in _MATHML_TAGS - {"math"}},
}
_CLEANER = nh3.Cleaner(
    tags=_TAGS | _MATHML_TAGS,
    attributes=_ATTRIBUTES,
    tag_attribute_values={"math": {"display": {"block", "inline"}}},
    allowed_classes={
        "div": {"code-block", "code-head", "math-block"},
        "span": {"code-lang"} | {name for name in STANDARD_TYPES.values() if name},
        "code": {f"language-{alias}" for alias in _LANGUAGES},
    },
    filter_style_properties={"text-align"},
    link_rel="noopener noreferrer nofollow",
    url_schemes={"http", "https", "mailto"},
)


def _fence(self, tokens, idx, options, env) -> str:  # noqa: ANN001 - markdown-it's renderer-rule signature
    """A fenced code block: a head with its language (when known), then the highlighted code."""
    token = tokens[idx]
    lang = unescapeAll(token.info).strip().split(maxsplit=1)[0].lower() if token.info.strip() else ""
    try:
        lexer = get_lexer_by_name(lang) if lang in _LANGUAGES else None
    except ClassNotFound:
        lexer = None
    if lexer is None:
        code = escapeHtml(token.content)
        return f'<div class="code-block"><div class="code-head"></div><pre><code>{code}</code></pre></div>\n'
    code = highlight(token.content, lexer, _FORMATTER)
    return (
        f'<div class="code-block"><div class="code-head"><span class="code-lang">{escapeHtml(lang)}</span></div>'
        f'<pre><code class="language-{escapeHtml(lang)}">{code}</code></pre></div>\n'
    )


def _math(self, tokens, idx, options, env) -> str:  # noqa: ANN001 - markdown-it's renderer-rule signature
    """MathML for ``$…$`` (inline) or ``$$…$$`` (display); the source as code if it does not parse."""
    token = tokens[idx]
    display = "inline" if token.type == "math_inline" else "block"  # $$…$$ inside a paragraph too
    try:
        mathml = latex_to_mathml(token.content, display=display)
    except Exception:  # noqa: BLE001 - latex2mathml raises many kinds on malformed input; show it as typed
        mathml = f"<code>{escapeHtml(token.content)}</code>"
    return f'<div class="math-block">{mathml}</div>\n' if token.block else mathml


_MD = (
    MarkdownIt("commonmark", {"html": False, "linkify": False})
    .enable("table")
    .enable("strikethrough")
    .use(
        dollarmath_plugin,
        allow_labels=False,
        allow_space=False,
        allow_digits=False,
        allow_blank_lines=False,
        double_inline=True,
    )
)
for _rule in ("fence", "code_block"):
    _MD.add_render_rule(_rule, _fence)
for _rule in ("math_inline", "math_inline_double", "math_block"):
    _MD.add_render_rule(_rule, _math)


# -- top-level blocks, for answers still being written ---------------------------------------------------
_MARKER = r"(?:[-+*]|\d{1,9}[.)])"
_LIST_ITEM = re.compile(rf"[ ]{{0,3}}{_MARKER}(?:[ \t]|$)")
_FENCE = re.compile(r"[ \t]*(`{3,}|~{3,})(.*)")
_ITEM_START = re.compile(rf"{_MARKER}[ \t]")
_BARE_MARKER = re.compile(_MARKER)
_MARKER_SO_FAR = re.compile(r"[-+*]|\d{1,9}[.)]?")

Block = tuple[int, int, int]  # start, end, and the text length from which the block counts as finished


def split_blocks(text: str, start: int = 0) -> tuple[list[Block], int]:
    """The finished top-level blocks of ``text[start:]`` and where the unfinished tail starts.

    Blocks end at blank lines outside code fences. A block is finished once the next one has begun:
    a line after the blank that cannot continue it (indented lines, and list items after a list,
    continue it, so a loose list stays one block). Whether a block is finished depends only on the
    text up to its ``decided`` length, so the same text splits the same way however it arrived.
    ``start`` must be the start of a block (0, or an earlier call's tail start).
    """
    blocks: list[Block] = []
    block_start, pos, length = start, start, len(text)
    fence: str | None = None  # the opening run of an open ``` or ~~~ fence
    has_list = after_blank = has_content = False
    while pos < length:
        newline = text.find("\n", pos)
        complete = newline != -1
        end = newline + 1 if complete else length
        line = text[pos : end - 1 if complete else end]
        if fence is not None:
            if complete and re.fullmatch(rf"[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*", line):
                fence = None
            pos = end
            continue
        if not line.strip():
            if not complete:
                break  # spaces so far: a blank line, or the indent of a continuing one
            after_blank = after_blank or has_content
            pos = end
            continue
        if after_blank:
            decided = _new_block_at(line, complete, has_list)
            if decided is None:
                break
            if decided:
                blocks.append((block_start, pos, pos + decided))
                block_start, has_list = pos, False
            after_blank = False
        has_content = True
        if not complete:
            break
        has_list = has_list or bool(_LIST_ITEM.match(line))
        if (found := _FENCE.match(line)) and not (found.group(1)[0] == "`" and "`" in found.group(2)):
            fence = found.group(1)
        pos = end
    return blocks, block_start


def _new_block_at(line: str, complete: bool, has_list: bool) -> int | None:
    """After a blank line: how much of ``line`` shows that it starts a new block (0: it continues
    the block before; None: cannot tell yet)."""
    if line[0] in " \t":
        return 0  # indented: a list item's next paragraph, or code; rendering it with the block is safe
    if not has_list:
        return 1
    for size in range(1, len(line) + 1):
        prefix, at_end = line[:size], complete and size == len(line)
        if _ITEM_START.match(prefix) or (at_end and _BARE_MARKER.fullmatch(prefix)):
            return 0  # the next item of the list
        if not _MARKER_SO_FAR.fullmatch(prefix):
            return size
    return len(line) + 1 if complete else None  # a bare "12" line: known with its newline


def markdown_html(text: str) -> str:
    """Sanitized HTML for Markdown text (not cached: for text still being written)."""
    return _CLEANER.clean(_MD.render(text))


@lru_cache(maxsize=2048)
def render_markdown(text: str, part: str | None = None) -> Markup:
    """Sanitized HTML for a message's Markdown (cached: finished messages do not change).

    ``part`` is for an answer still being written: ``"blocks"`` renders its finished blocks,
    ``"tail"`` the unfinished block after them (see ``streaming_markdown``).
    """
    if part is None:
        return Markup(markdown_html(text))
    blocks, tail_start = split_blocks(text)
    if part == "blocks":
        return Markup("".join(markdown_html(text[start:end]) for start, end, _decided in blocks))
    return Markup(markdown_html(text[tail_start:]))


def render_plain(text: str) -> Markup:
    """Escaped text, for user messages."""
    return escape(text)


def pygments_css() -> str:
    """Stylesheet for highlighted code."""
    return HtmlFormatter(style="friendly").get_style_defs(".md pre")
