"""Presets: a user's named sets of conversation settings and an opening prompt, picked when starting a chat.

The same checks as a conversation's own settings (``ALLOWED_MODELS``, ``MAX_RESPONSE_TOKENS``) apply.
"""

from __future__ import annotations

from flask import current_app
from sqlalchemy import func, select

from .conversations import NOT_FOUND, allowed_models, parse_number
from .errors import ChatError
from .extensions import db
from .models import Preset

MAX_PRESETS = 50  # per identity
PROMPT_CHARS = 20000  # system prompt and opening prompt, each


def owned_preset(user_id: str | None, preset_id: int) -> Preset:
    """The preset if it belongs to ``user_id``; a 404 ChatError otherwise."""
    preset = db.session.get(Preset, preset_id)
    if preset is None or user_id is None or preset.user_id != user_id:
        raise ChatError(NOT_FOUND, 404, "not_found")
    return preset


def list_presets(user_id: str | None) -> list[Preset]:
    """The user's presets, by name."""
    if user_id is None:
        return []
    return list(db.session.scalars(select(Preset).where(Preset.user_id == user_id).order_by(Preset.name, Preset.id)))


def create_preset(user_id: str, fields: dict) -> Preset:
    """A new preset from ``fields`` (name, model, system_prompt, temperature, max_tokens, opening_prompt)."""
    count = db.session.scalar(select(func.count()).select_from(Preset).where(Preset.user_id == user_id)) or 0
    if count >= MAX_PRESETS:
        raise ChatError(f"You can keep at most {MAX_PRESETS} presets; delete one first.", 422, "too_many")
    preset = Preset(user_id=user_id)
    _apply(preset, {"name": "", **fields})
    db.session.add(preset)
    db.session.commit()
    return preset


def update_preset(preset: Preset, fields: dict) -> Preset:
    """Change the fields sent; those left out stay."""
    _apply(preset, fields)
    db.session.commit()
    return preset


def delete_preset(preset: Preset) -> None:
    """Delete a preset (conversations started with it keep their settings)."""
    db.session.delete(preset)
    db.session.commit()


def _invalid(field: str, message: str) -> ChatError:
    return ChatError(message, 422, "invalid", {"fields": [{"field": field}], "field": field})


def _apply(preset: Preset, fields: dict) -> None:
    if "name" in fields:
        name = " ".join((fields["name"] or "").split())
        if not name:
            raise _invalid("name", "Give the preset a name.")
        if len(name) > 100:
            raise _invalid("name", f"A preset name can be at most 100 characters; this one has {len(name)}.")
        taken = select(Preset.id).where(Preset.user_id == preset.user_id, Preset.name == name, Preset.id != preset.id)
        if db.session.scalar(taken) is not None:
            raise _invalid("name", f"You already have a preset named “{name}”; choose another name.")
        preset.name = name
    if "model" in fields:
        model = (fields["model"] or "").strip() or None
        allowed = allowed_models()
        if model is not None and allowed and model not in allowed:
            raise _invalid("model", f"The model {model!r} is not offered here. Choose one of: {', '.join(allowed)}.")
        if model is not None and len(model) > 200:
            raise _invalid("model", "A model name can be at most 200 characters.")
        preset.model = model
    for key in ("system_prompt", "opening_prompt"):
        if key in fields:
            text = (fields[key] or "").strip() or None
            if text and len(text) > PROMPT_CHARS:
                label = key.replace("_", " ").capitalize()
                raise _invalid(key, f"{label} can be at most {PROMPT_CHARS:,} characters; this one has {len(text):,}.")
            setattr(preset, key, text)
    if "temperature" in fields:
        temperature = fields["temperature"]
        if temperature is not None and not 0 <= temperature <= 2:
            raise _invalid("temperature", "Temperature must be between 0 and 2.")
        preset.temperature = temperature
    if "max_tokens" in fields:
        max_tokens, cap = fields["max_tokens"], current_app.config["MAX_RESPONSE_TOKENS"]
        if max_tokens is not None and not 1 <= max_tokens <= cap:
            raise _invalid("max_tokens", f"Max tokens must be from 1 to {cap:,} here (MAX_RESPONSE_TOKENS).")
        preset.max_tokens = max_tokens


def fields_from_form(form: dict[str, str]) -> dict:
    """A preset's fields as typed in a form (numbers checked, empty means the default)."""
    return {
        "name": form.get("name", ""),
        "model": form.get("model", ""),
        "system_prompt": form.get("system_prompt", ""),
        "opening_prompt": form.get("opening_prompt", ""),
        "temperature": parse_number(form.get("temperature", ""), "temperature", float, 0, 2),
        "max_tokens": parse_number(form.get("max_tokens", ""), "max_tokens", int, 1, None),
    }
