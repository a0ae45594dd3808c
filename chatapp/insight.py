"""Insight into answers: the Stats page's series and charts.

An answer's words and tone are measured once, when it ends (``tone.answer_metrics``). The stats are
computed from the answers of the last ``days`` days, grouped by day in the viewer's time zone and by
model. Charts are SVG rendered on the server by pygal, shown as images (an SVG image runs no script
and the page's style policy does not reach into it), each with a table of the same figures under it.
"""

from __future__ import annotations

import base64
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from statistics import median
from zoneinfo import ZoneInfo

from sqlalchemy import select

from . import accounts
from .errors import ChatError
from .extensions import db
from .models import Conversation, Message, User, utcnow
from .tone import tone

TTFT_BUCKETS = ((250, "< 0.25 s"), (500, "0.25–0.5 s"), (1000, "0.5–1 s"), (2000, "1–2 s"), (5000, "2–5 s"))
DURATION_BUCKETS = ((2000, "< 2 s"), (5000, "2–5 s"), (10_000, "5–10 s"), (30_000, "10–30 s"), (60_000, "30–60 s"))


@dataclass
class Day:
    """One day's answers, in the viewer's time zone."""

    day: str  # ISO date
    answers: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    up: int = 0
    down: int = 0
    sentiment: float | None = None  # the day's average


@dataclass
class ModelRow:
    """One model's answers over the period."""

    model: str
    answers: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_ms_median: float | None = None
    duration_ms_median: float | None = None
    sentiment: float | None = None
    up: int = 0
    down: int = 0


@dataclass
class Stats:
    """The series behind the Stats page and ``GET /api/v1/stats``."""

    time_zone: str
    days: list[Day]
    models: list[ModelRow]
    ttft_ms: list[dict] = field(default_factory=list)  # histogram: {"bucket", "answers"}
    duration_ms: list[dict] = field(default_factory=list)
    feedback: dict = field(default_factory=dict)  # {"up", "down", "ratio"}
    tones: dict = field(default_factory=dict)  # {"positive", "neutral", "negative"}

    @property
    def answers(self) -> int:
        return sum(day.answers for day in self.days)

    def as_dict(self) -> dict:
        return asdict(self)


def stats_for(user_id: str | None, time_zone: str, days: int = 30, now: datetime | None = None) -> Stats:
    """The last ``days`` days (today included) of one identity's answers, or everyone's (``None``)."""
    zone = ZoneInfo(time_zone)
    today = (now or utcnow()).astimezone(zone).date()
    first = today - timedelta(days=days - 1)
    start = datetime.combine(first, datetime.min.time(), zone)
    query = (
        select(
            Message.created_at,
            Message.model,
            Message.prompt_tokens,
            Message.completion_tokens,
            Message.ttft_ms,
            Message.duration_ms,
            Message.sentiment,
            Message.feedback_rating,
        )
        .join(Conversation, Message.conversation_id == Conversation.id)
        .where(Message.role == "assistant", Message.status != "streaming", Message.created_at >= start)
    )
    if user_id is not None:
        query = query.where(Conversation.user_id == user_id)
    rows = db.session.execute(query).all()

    by_day = {first + timedelta(days=n): Day((first + timedelta(days=n)).isoformat()) for n in range(days)}
    by_model: dict[str, ModelRow] = {}
    day_tones: dict[date, list[float]] = defaultdict(list)
    model_values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    ttft: list[int] = []
    duration: list[int] = []
    tones: Counter[str] = Counter()
    for created, model, prompt, completion, ttft_ms, duration_ms, sentiment, rating in rows:
        day = by_day.get(_aware(created).astimezone(zone).date())
        if day is None:
            continue
        name = model or "unknown"
        row = by_model.setdefault(name, ModelRow(name))
        for target in (day, row):
            target.answers += 1
            target.prompt_tokens += prompt or 0
            target.completion_tokens += completion or 0
            target.up += rating == "up"
            target.down += rating == "down"
        if sentiment is not None:
            day_tones[_aware(created).astimezone(zone).date()].append(sentiment)
            model_values[name]["sentiment"].append(sentiment)
            tones[tone(sentiment)] += 1
        if ttft_ms is not None:
            ttft.append(ttft_ms)
            model_values[name]["ttft"].append(ttft_ms)
        if duration_ms is not None:
            duration.append(duration_ms)
            model_values[name]["duration"].append(duration_ms)
    for key, scores in day_tones.items():
        by_day[key].sentiment = _mean(scores)
    for name, row in by_model.items():
        measured = model_values[name]
        row.ttft_ms_median = median(measured["ttft"]) if measured["ttft"] else None
        row.duration_ms_median = median(measured["duration"]) if measured["duration"] else None
        row.sentiment = _mean(measured["sentiment"])
    up, down = sum(d.up for d in by_day.values()), sum(d.down for d in by_day.values())
    return Stats(
        time_zone=time_zone,
        days=list(by_day.values()),
        models=sorted(by_model.values(), key=lambda r: (-r.answers, r.model)),
        ttft_ms=_histogram(ttft, TTFT_BUCKETS),
        duration_ms=_histogram(duration, DURATION_BUCKETS),
        feedback={"up": up, "down": down, "ratio": round(up / (up + down), 3) if up + down else None},
        tones={name: tones[name] for name in ("positive", "neutral", "negative")},
    )


def _mean(values: Sequence[float]) -> float | None:
    return round(sum(values) / len(values), 3) if values else None


def _aware(moment: datetime) -> datetime:
    """Stored times are UTC; SQLite hands them back without a zone."""
    return moment if moment.tzinfo else moment.replace(tzinfo=ZoneInfo("UTC"))


def _histogram(values: Sequence[int], buckets: Sequence[tuple[int, str]]) -> list[dict]:
    counts = [0] * (len(buckets) + 1)
    for value in values:
        counts[next((i for i, (limit, _) in enumerate(buckets) if value < limit), len(buckets))] += 1
    labels = [label for _, label in buckets] + [f"≥ {buckets[-1][0] / 1000:g} s"]
    return [{"bucket": label, "answers": count} for label, count in zip(labels, counts, strict=True)]


# -- charts -----------------------------------------------------------------------------------------------
THEMES = {
    "light": {"ink": "#3d3b37", "muted": "#5f5c55", "grid": "#e5e2db", "colors": ("#2a55c9", "#b07a00", "#1d7036")},
    "dark": {"ink": "#e4e2dd", "muted": "#b5b1a8", "grid": "#3a3935", "colors": ("#8fb0ff", "#e0b456", "#6fcf8d")},
}


def _style(theme: str):  # noqa: ANN202 - pygal has no type hints
    from pygal.style import Style

    colours = THEMES[theme]
    return Style(
        background="transparent",
        plot_background="transparent",
        foreground=colours["ink"],
        foreground_strong=colours["ink"],
        foreground_subtle=colours["grid"],
        colors=colours["colors"],
        font_family="system-ui, sans-serif",
        label_font_size=13,
        major_label_font_size=13,
        legend_font_size=13,
        value_font_size=12,
        title_font_size=15,
    )


def chart(kind: str, labels: Sequence[str], series: Mapping[str, Sequence[float | None]], theme: str) -> str:
    """A chart as a ``data:`` URI of its SVG: "bar", "stacked" or "line"."""
    import pygal  # only where charts are drawn: it adds an import hook of its own to sys.meta_path

    make = {"bar": pygal.Bar, "stacked": pygal.StackedBar, "line": pygal.Line}[kind]
    many = len(labels) > 8  # the days: every 7th labelled, counting back from today
    graph = make(
        style=_style(theme),
        js=[],  # no script: the image is static, and needs nothing from the network
        disable_xml_declaration=True,
        show_legend=len(series) > 1,
        legend_at_bottom=True,
        legend_at_bottom_columns=len(series),
        width=720,
        height=300,
        margin=8,
        min_scale=3,
        max_scale=5,  # a few calm guide lines, not one per unit
        show_x_guides=False,
        x_label_rotation=0,
        show_minor_x_labels=not many,
        x_labels_major=list(labels)[::-7] if many else None,
        truncate_label=-1,
        allow_interruptions=True,
    )
    graph.x_labels = list(labels)
    for name, values in series.items():
        graph.add(name, list(values))
    svg = graph.render(is_unicode=True)
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()


def charts_for(stats: Stats, labels: Sequence[str]) -> dict[str, dict[str, str]]:
    """The Stats page's charts, per theme: answers, tokens, time to first token, duration, tone."""
    days = stats.days
    return {
        theme: {
            "answers": chart("bar", labels, {"Answers": [d.answers for d in days]}, theme),
            "tokens": chart(
                "stacked",
                labels,
                {"Prompt": [d.prompt_tokens for d in days], "Completion": [d.completion_tokens for d in days]},
                theme,
            ),
            "ttft": chart("bar", *_bars(stats.ttft_ms), theme),
            "duration": chart("bar", *_bars(stats.duration_ms), theme),
            "sentiment": chart("line", labels, {"Average tone": [d.sentiment for d in days]}, theme),
        }
        for theme in THEMES
    }


def _bars(histogram: list[dict]) -> tuple[list[str], dict[str, list[float | None]]]:
    return [b["bucket"] for b in histogram], {"Answers": [b["answers"] for b in histogram]}


def stats_of(viewer: User, scope: str = "mine", days: int = 30) -> Stats:
    """What the Stats page and the API show ``viewer``: their own answers, or everyone's for an admin."""
    if scope not in ("mine", "all"):
        raise ChatError('scope must be "mine" or "all".', 422, "invalid_scope", {"fields": [{"field": "scope"}]})
    if scope == "all" and not accounts.is_admin(viewer):
        raise ChatError("Only an administrator can see everyone's stats.", 403, "forbidden")
    # A guest not stored yet has no answers (and no id: None would mean everyone).
    return stats_for(None if scope == "all" else viewer.id or "", viewer.time_zone or "UTC", days)
