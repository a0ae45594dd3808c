"""An answer's length in words and its tone, measured once when it ends.

The tone is VADER's compound sentiment score, from -1 (negative) to 1 (positive): a word list that
ships inside the ``vaderSentiment`` package, so nothing is downloaded.
"""

from __future__ import annotations

from functools import cache

NEUTRAL = 0.05  # VADER's usual threshold: compound scores within ±0.05 are neutral


@cache
def _analyzer():  # noqa: ANN202 - vaderSentiment has no type hints
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def load_analyzer() -> None:
    """Load VADER's word list now (about 70 ms) rather than inside the first answer's end."""
    _analyzer()


def answer_metrics(text: str) -> dict:
    """An answer's length in words and its tone from -1 to 1 (None when it has no words)."""
    words = len(text.split())
    sentiment = round(_analyzer().polarity_scores(text)["compound"], 3) if words else None
    return {"word_count": words, "sentiment": sentiment}


def tone(sentiment: float | None) -> str:
    """A word for a sentiment score."""
    if sentiment is None:
        return "unknown"
    return "positive" if sentiment >= NEUTRAL else "negative" if sentiment <= -NEUTRAL else "neutral"
