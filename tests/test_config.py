"""Configuration: defaults, instance/config.py, environment variables, the production guard."""

from __future__ import annotations

import pytest
from flask import Flask

from chatapp.config import ConfigError, load_config


def bare_app(tmp_path) -> Flask:  # noqa: ANN001
    return Flask("configtest", instance_path=str(tmp_path), instance_relative_config=True)


def test_defaults_then_instance_file_then_environment(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    (tmp_path / "config.py").write_text("CHAT_MODEL = 'from-file'\nMAX_HISTORY_TOKENS = 111\n")
    monkeypatch.setenv("MAX_HISTORY_TOKENS", "222")
    monkeypatch.setenv("UPSTREAM_TIMEOUT", "2.5")
    app = bare_app(tmp_path)
    load_config(app)
    assert app.config["CHAT_MODEL"] == "from-file"
    assert app.config["MAX_HISTORY_TOKENS"] == 222  # the environment wins, converted to int
    assert app.config["UPSTREAM_TIMEOUT"] == 2.5
    assert app.config["MAX_USER_MESSAGE_TOKENS"] == 4000  # default
    assert app.config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path}/chatapp.sqlite3"


def test_development_generates_and_keeps_a_secret_key(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.delenv("SECRET_KEY", raising=False)
    first = bare_app(tmp_path)
    load_config(first)
    second = bare_app(tmp_path)
    load_config(second)
    assert len(first.config["SECRET_KEY"]) == 64
    assert first.config["SECRET_KEY"] == second.config["SECRET_KEY"]  # sessions survive a restart
    assert (tmp_path / "secret_key").exists()


def test_production_refuses_to_start_without_secret_key(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.delenv("SECRET_KEY", raising=False)
    monkeypatch.setenv("CHATAPP_ENV", "production")
    with pytest.raises(ConfigError, match="SECRET_KEY is not set"):
        load_config(bare_app(tmp_path))
    monkeypatch.setenv("SECRET_KEY", "a-real-secret")
    app = bare_app(tmp_path)
    load_config(app)
    assert app.config["SECRET_KEY"] == "a-real-secret"


def test_platform_postgres_urls_get_a_driver(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("DATABASE_URL", "postgres://u:p@db.example:5432/chat")
    app = bare_app(tmp_path)
    load_config(app)
    assert app.config["SQLALCHEMY_DATABASE_URI"] == "postgresql+psycopg://u:p@db.example:5432/chat"


def test_startup_migrations_keep_the_apps_own_logging(make_app, caplog) -> None:  # noqa: ANN001
    # The app runs its migrations at startup; Alembic's logging set-up once silenced every logger
    # that already existed, so a failed answer left no trace in the server log.
    import logging
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        app = make_app()
        app.test_client().get("/")  # a request checks a database connection out and back in
    logging.getLogger("chatapp.generation").error("an answer failed")
    assert "an answer failed" in caplog.text
    assert not [w for w in caught if "deprecat" in str(w.message).lower()], [str(w.message) for w in caught]
