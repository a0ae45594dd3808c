"""Rendering cost per update of an answer streamed as Markdown (chatapp.streaming_markdown).

A 5,000-token answer (headings, paragraphs, lists, code, a table, math) arrives 12 tokens per
update (50 tokens/s at four renders a second). Per update the page's renderer finds newly finished
blocks, renders each once, and re-renders the unfinished tail. Prints microseconds per tail render
and per finished block, the whole update as the shared Document does it, and, for comparison,
re-rendering the whole text each update. A second run streams one 5,000-token paragraph: the worst
case, where the tail is the whole answer.

    python bench/render_cost.py [--tokens 5000] [--per-update 12]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chatapp.rendering import markdown_html, split_blocks  # noqa: E402
from chatapp.streaming_markdown import RENDER_INTERVAL, Document  # noqa: E402

SECTION = """## Part {n}

This part explains step {n} in a few sentences, with **bold**, *emphasis*, `inline code` and a
[link](https://example.com/{n}); long enough to read like a model's paragraph, which usually runs for
a few lines before the next one starts.

- the first point of part {n}
- the second point, a little longer than the first one
- the third point

```python
def step_{n}(values: list[int]) -> int:
    total = 0
    for value in values:
        total += value * {n}
    return total
```

| name | value |
| --- | ---: |
| part | {n} |

The area is $\\pi r^2$ and the sum is $$\\sum_{{i=1}}^{{n}} i = \\frac{{n(n+1)}}{{2}}$$ as usual.

"""


def tokens_of(text: str, count: int) -> list[str]:
    """The text cut into model-sized tokens (about four characters), ``count`` of them."""
    return re.findall(r"\s*\S{1,4}|\s+", text)[:count]


def answer(count: int) -> list[str]:
    text, n = "", 0
    while len(tokens_of(text, count + 1)) <= count:
        text += SECTION.format(n=n)
        n += 1
    return tokens_of(text, count)


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def measure(tokens: list[str], per_update: int) -> dict:
    """Per-update costs in microseconds, rendering as the shared Document does."""
    tails, blocks, splits, updates, whole = [], [], [], [], []
    text, cut = "", 0
    document = Document()
    now = 0.0
    for start in range(0, len(tokens), per_update):
        piece = "".join(tokens[start : start + per_update])
        text += piece
        # The pieces, timed one by one (the same calls Document._render makes).
        t0 = time.perf_counter()
        found, cut = split_blocks(text, cut)
        splits.append((time.perf_counter() - t0) * 1e6)
        for block_start, block_end, _ in found:
            t0 = time.perf_counter()
            markdown_html(text[block_start:block_end])
            blocks.append((time.perf_counter() - t0) * 1e6)
        t0 = time.perf_counter()
        markdown_html(text[cut:])
        tails.append((time.perf_counter() - t0) * 1e6)
        # The whole update through the shared document, as a page's follower runs it.
        document.feed(len(text), piece)
        now += RENDER_INTERVAL
        t0 = time.perf_counter()
        document.update_after(len(text) - len(piece), now)
        updates.append((time.perf_counter() - t0) * 1e6)
        if start % (per_update * 40) == 0 or start + per_update >= len(tokens):
            t0 = time.perf_counter()
            markdown_html(text)
            whole.append((time.perf_counter() - t0) * 1e6)
    return {
        "chars": len(text),
        "updates": len(updates),
        "tail": tails,
        "block": blocks,
        "split": splits,
        "update": updates,
        "whole_last": whole[-1],
        "whole_mean": statistics.mean(whole),
    }


def line(name: str, values: list[float]) -> str:
    return (
        f"| {name} | {len(values)} | {statistics.mean(values):.0f} | {percentile(values, 50):.0f}"
        f" | {percentile(values, 99):.0f} | {max(values):.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=5000)
    parser.add_argument("--per-update", type=int, default=12)
    args = parser.parse_args()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"$ python bench/render_cost.py --tokens {args.tokens} --per-update {args.per_update}")
    print(f"load average (1, 5, 15 min): {load}\n")
    markdown_html(SECTION.format(n=0))  # imports and lexers loaded before timing
    for title, tokens in (
        ("Markdown answer", answer(args.tokens)),
        ("worst case: one paragraph", tokens_of(("lorem ipsum dolor sit amet " * args.tokens), args.tokens)),
    ):
        result = measure(tokens, args.per_update)
        print(f"{title}: {len(tokens)} tokens, {result['chars']} characters, {result['updates']} updates")
        print("| µs | count | mean | p50 | p99 | max |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        print(line("tail render", result["tail"]))
        if result["block"]:
            print(line("finished block render (once each)", result["block"]))
        print(line("block split (incremental)", result["split"]))
        print(line("whole update (Document)", result["update"]))
        print(
            f"re-rendering the whole text instead: {result['whole_mean']:.0f} µs on average,"
            f" {result['whole_last']:.0f} µs at the end\n"
        )


if __name__ == "__main__":
    main()
