"""What answers cost: ``MODEL_PRICES`` (the operator's, for local or self-hosted models) first, then the
price table kept in the ``genai-prices`` package (bundled data, read offline) for the provider serving
``OPENAI_BASE_URL``. Unknown: None, never a guess."""

from __future__ import annotations

import json
import logging
from decimal import Decimal
from functools import lru_cache

from flask import current_app
from sqlalchemy import func, select

from .config import ConfigError
from .extensions import db
from .models import Message

log = logging.getLogger(__name__)
PER = Decimal(1_000_000)  # MODEL_PRICES are per million tokens


def model_prices() -> dict[str, tuple[Decimal, Decimal]]:
    """``MODEL_PRICES`` as {model: (input, output) per million tokens}."""
    raw = current_app.config.get("MODEL_PRICES") or ""
    return _parse(raw if isinstance(raw, str) else json.dumps(raw, sort_keys=True))


@lru_cache(maxsize=8)
def _parse(raw: str) -> dict[str, tuple[Decimal, Decimal]]:
    data = json.loads(raw) if raw.strip() else {}
    try:
        return {
            str(model): (Decimal(str(price["input"])), Decimal(str(price["output"]))) for model, price in data.items()
        }
    except (AttributeError, KeyError, TypeError, ArithmeticError) as exc:
        raise ConfigError(
            'MODEL_PRICES must be JSON like {"my-model": {"input": 0.15, "output": 0.6}} (US dollars per million '
            f"tokens): {exc!r}"
        ) from exc


def check_config(raw: str | dict | None) -> None:
    """Refuse to start with a MODEL_PRICES that cannot be read (the message says what to write)."""
    if raw:
        try:
            _parse(raw if isinstance(raw, str) else json.dumps(raw))
        except ValueError as exc:
            raise ConfigError(f"MODEL_PRICES is not valid JSON: {exc}") from exc


def cost(
    model: str | None, provider: str | None, prompt_tokens: int | None, completion_tokens: int | None
) -> float | None:
    """US dollars for one answer's tokens, when its model's prices are known; else None."""
    if not model or prompt_tokens is None or completion_tokens is None:
        return None
    own = model_prices().get(model)
    if own is not None:
        return float((own[0] * prompt_tokens + own[1] * completion_tokens) / PER)
    if provider != "openai":  # the bundled local model costs nothing but is in no price table: say nothing
        return None
    # The table's prices are a provider's: the one serving OPENAI_BASE_URL (OpenAI, OpenRouter, Groq, …).
    # A server it does not know (Ollama, vLLM on your own machine) has no price but MODEL_PRICES.
    api_url = current_app.config.get("OPENAI_BASE_URL") or OPENAI_API_URL
    return _table_cost(model, prompt_tokens, completion_tokens, api_url)


OPENAI_API_URL = "https://api.openai.com/v1"


def load_table() -> None:
    """Read the bundled price table now (a third of a second) rather than inside the first answer's end."""
    _table_cost("gpt-4o", 1, 1, OPENAI_API_URL)


@lru_cache(maxsize=1024)
def _table_cost(model: str, prompt_tokens: int, completion_tokens: int, api_url: str) -> float | None:
    try:
        from genai_prices import Usage, calc_price
    except ImportError:  # pragma: no cover - a dependency, listed in setup.cfg
        return None
    try:
        usage = Usage(input_tokens=prompt_tokens, output_tokens=completion_tokens)
        price = calc_price(usage, model_ref=model, provider_api_url=api_url)
    except LookupError:
        return None
    except Exception as exc:  # noqa: BLE001 - a price table is no reason to fail a page
        log.info("no price for %s: %r", model, exc)
        return None
    return float(price.total_price)


def message_cost(message: Message) -> float | None:
    """An answer's cost (None: unknown, or not an answer)."""
    return cost(message.model, message.provider, message.prompt_tokens, message.completion_tokens)


def conversation_cost(conversation_id: int) -> float | None:
    """What every answer in the conversation cost, all versions included; None if none has a known price."""
    rows = db.session.execute(
        select(
            Message.model,
            Message.provider,
            func.sum(Message.prompt_tokens),
            func.sum(Message.completion_tokens),
        )
        .where(Message.conversation_id == conversation_id, Message.role == "assistant")
        .where(Message.prompt_tokens.is_not(None), Message.completion_tokens.is_not(None))
        .group_by(Message.model, Message.provider)
    )
    costs = [cost(model, provider, int(p or 0), int(c or 0)) for model, provider, p, c in rows]
    known = [c for c in costs if c is not None]
    return sum(known) if known else None


def format_cost(value: float | None) -> str:
    """$0.0123, with enough digits for tiny sums; empty for None."""
    if value is None:
        return ""
    if value == 0:
        return "$0"
    if value >= 1:
        return f"${value:,.2f}"
    digits = 2
    while round(value, digits) == 0 and digits < 8:
        digits += 1
    return f"${value:.{digits + 1}f}"
