"""``flask`` commands for operators: admins, password recovery without email, the guest sweep, backups."""

from __future__ import annotations

from pathlib import Path

import click
from flask import Flask, current_app
from flask.cli import with_appcontext

from . import accounts
from .errors import ChatError


def _password(prompt: str) -> str:
    return click.prompt(prompt, hide_input=True, confirmation_prompt=True)


@click.command("create-admin")
@with_appcontext
@click.argument("username")
def create_admin(username: str) -> None:
    """Make USERNAME an admin; a new account is created (asking for its password) if there is none."""
    password = None if accounts.find_account(username) else _password(f"Password for the new account {username}")
    try:
        user, created = accounts.make_admin(username, password)
    except ChatError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"{'Created' if created else 'Updated'} {user.username}: an admin.")


@click.command("set-password")
@with_appcontext
@click.argument("username")
def set_password(username: str) -> None:
    """Set USERNAME's password (asked for twice) and sign the account out everywhere."""
    password = _password(f"New password for {username}")
    try:
        user = accounts.set_password(username, password)
    except ChatError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"Password of {user.username} changed; its sessions are signed out.")


@click.command("purge-guests")
@with_appcontext
@click.option("--days", type=int, default=None, help="Idle for this many days (default GUEST_RETENTION_DAYS).")
def purge_guests(days: int | None) -> None:
    """Delete guests idle for GUEST_RETENTION_DAYS, with their conversations, images and tokens."""
    days = current_app.config["GUEST_RETENTION_DAYS"] if days is None else days
    count = accounts.purge_guests(days)
    click.echo(f"Deleted {count} guest{'' if count == 1 else 's'} idle for more than {days} days.")


@click.command("backup")
@with_appcontext
@click.argument("destination", type=click.Path(file_okay=False, path_type=Path))
def backup(destination: Path) -> None:
    """Copy the live SQLite database and the uploaded images into DESTINATION (a new folder)."""
    from . import backup as backups

    try:
        summary = backups.backup(destination)
    except backups.BackupError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Backed up {summary.conversations} conversations and {summary.files} files into {destination}.")


@click.command("restore")
@with_appcontext
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace a database that already holds data.")
def restore(source: Path, force: bool) -> None:
    """Bring back a backup made by flask backup (stop the app first)."""
    from . import backup as backups

    try:
        summary = backups.restore(source, force)
    except backups.BackupError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Restored {summary.conversations} conversations and {summary.files} files from {source}.")


def init_app(app: Flask) -> None:
    """Add the commands to ``flask``."""
    for command in (create_admin, set_password, purge_guests, backup, restore):
        app.cli.add_command(command)
