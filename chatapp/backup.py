"""Back up and restore a SQLite installation: the database (SQLite's online backup API) and the uploads.

A backup is a folder holding ``chatapp.sqlite3`` (a consistent copy, taken while the app runs) and
``uploads/`` (the image files of local storage). The database is copied first: every image row in
the copy had its file written before the row was committed, so the copied folder has them all.
PostgreSQL is backed up with its own tools (``pg_dump``; see README "Backup and restore").
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from .extensions import db
from .storage import local

DATABASE = "chatapp.sqlite3"
UPLOADS = "uploads"


class BackupError(Exception):
    """Something the operator must change (a path, a flag, the database kind)."""


@dataclass(frozen=True)
class Summary:
    """What was copied."""

    database: Path
    conversations: int
    files: int


def sqlite_path() -> Path:
    """The app's SQLite file; PostgreSQL (or an in-memory database) is refused with what to use instead."""
    url = db.engine.url
    if url.get_backend_name() != "sqlite":
        raise BackupError(
            f"DATABASE_URL is {url.get_backend_name()}: back it up with pg_dump and restore it with pg_restore"
            " (README, 'Backup and restore'). flask backup copies SQLite databases."
        )
    if not url.database or url.database == ":memory:":
        raise BackupError("The database is in memory: there is nothing on disk to back up.")
    return Path(url.database).resolve()


def backup(destination: Path) -> Summary:
    """Copy the live database and the uploads folder into ``destination`` (new or empty)."""
    source = sqlite_path()
    if destination.exists() and any(destination.iterdir()):
        raise BackupError(f"{destination} is not empty: back up into a new folder.")
    destination.mkdir(parents=True, exist_ok=True)
    partial = destination / f"{DATABASE}.partial"
    _copy_database(source, partial)  # one step, under one read transaction: a consistent snapshot
    partial.rename(destination / DATABASE)
    files = _copy_files(Path(local().folder), destination / UPLOADS)
    return Summary(destination / DATABASE, _count_conversations(destination / DATABASE), files)


def restore(source: Path, force: bool = False) -> Summary:
    """Bring back a backup made by ``backup``; refuses to replace existing data unless ``force``."""
    copy = source / DATABASE
    if not copy.is_file():
        raise BackupError(f"{copy} does not exist: give the folder that flask backup wrote.")
    target = sqlite_path()
    uploads = Path(local().folder)
    if not force:
        if _count_users(target):
            raise BackupError(f"{target} already holds accounts or conversations: add --force to replace it.")
        if uploads.is_dir() and any(uploads.iterdir()):
            raise BackupError(f"{uploads} already holds files: add --force to add the backup's files to them.")
    db.session.remove()
    db.engine.dispose()  # no connection of ours keeps the old pages
    _copy_database(copy, target)
    files = _copy_files(source / UPLOADS, uploads)
    return Summary(target, _count_conversations(target), files)


def _copy_database(source: Path, target: Path) -> None:
    with (
        contextlib.closing(sqlite3.connect(source, timeout=30)) as reader,
        contextlib.closing(sqlite3.connect(target, timeout=30)) as writer,
    ):
        reader.backup(writer)  # pages=-1: the whole database in a single step


def _copy_files(source: Path, target: Path) -> int:
    target.mkdir(parents=True, exist_ok=True)
    if not source.is_dir():
        return 0
    shutil.copytree(source, target, dirs_exist_ok=True)
    return sum(len(files) for _, _, files in os.walk(source))


def _count_users(path: Path) -> int:
    if not path.exists():
        return 0
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        return conn.execute('SELECT count(*) FROM "user"').fetchone()[0] if "user" in tables else 0


def _count_conversations(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as conn:
        return conn.execute("SELECT count(*) FROM conversation").fetchone()[0]
