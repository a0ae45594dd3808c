"""Where the bytes of attached images live: local files, the database, or an S3-compatible bucket.

``IMAGE_STORAGE`` picks the backend; unset, it is ``s3`` when ``S3_BUCKET`` is set, ``database`` when
``DATABASE_URL`` is PostgreSQL (so images survive deploys and are shared by every host), else
``local`` (files under ``UPLOAD_FOLDER``). Rows in the ``image`` table describe each image in every
case; a backend stores only the bytes, under the image's random file name.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Protocol

from flask import Flask, current_app

from .config import ConfigError
from .extensions import db
from .models import Image, ImageData

BACKENDS = ("local", "database", "s3")


class Missing(LookupError):
    """The image's bytes are not in the storage (e.g. a file lost with a wiped disk)."""


class Storage(Protocol):
    """A place for image bytes, keyed by the image's file name."""

    name: str

    def save(self, image: Image, data: bytes) -> None:
        """Store the bytes of a new image (its row may not be flushed yet)."""

    def load(self, image: Image) -> bytes:
        """The image's bytes; raises Missing."""

    def delete(self, filenames: list[str]) -> None:
        """Remove the bytes of images whose rows are gone."""


class LocalStorage:
    """Files in a folder of this host: the SQLite default. Lost with the disk on Heroku or Render."""

    name = "local"

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def path(self, filename: str) -> str:
        """The file's path."""
        return os.path.join(self.folder, filename)

    def save(self, image: Image, data: bytes) -> None:
        """Write the file (the folder is created on first use)."""
        os.makedirs(self.folder, exist_ok=True)
        with open(self.path(image.filename), "wb") as file:
            file.write(data)

    def load(self, image: Image) -> bytes:
        """Read the file."""
        try:
            with open(self.path(image.filename), "rb") as file:
                return file.read()
        except FileNotFoundError as exc:
            raise Missing(image.filename) from exc

    def delete(self, filenames: list[str]) -> None:
        """Delete the files."""
        for filename in filenames:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path(filename))


class DatabaseStorage:
    """Bytes in the ``image_data`` table, saved in the same transaction as the image's row.

    Its rows go with their image through the foreign key's ON DELETE CASCADE, so deleting an image
    row (a conversation, a message, a user) deletes its bytes too.
    """

    name = "database"

    def save(self, image: Image, data: bytes) -> None:
        """Add the bytes to the session; committed with the image."""
        db.session.add(ImageData(image=image, data=data))

    def load(self, image: Image) -> bytes:
        """Read the bytes."""
        data = db.session.scalar(db.select(ImageData.data).where(ImageData.image_id == image.id))
        if data is None:
            raise Missing(image.filename)
        return data

    def delete(self, filenames: list[str]) -> None:
        """Nothing to do: the rows went with their images."""


class S3Storage:
    """Objects in an S3-compatible bucket (AWS S3, Cloudflare R2, Backblaze B2, MinIO, …)."""

    name = "s3"

    def __init__(self, config: dict[str, Any]) -> None:
        try:
            import boto3
        except ImportError:
            raise ConfigError(
                "Images are to be stored in S3 (S3_BUCKET or IMAGE_STORAGE=s3) but boto3 is not installed: "
                "pip install 'chatapp[s3]'."
            ) from None
        if not config["S3_BUCKET"]:
            raise ConfigError("IMAGE_STORAGE is s3 but S3_BUCKET is not set: set it to the bucket's name.")
        self.bucket = config["S3_BUCKET"]
        self.prefix = config["S3_PREFIX"] or ""
        self.client = boto3.client(
            "s3",
            endpoint_url=config["S3_ENDPOINT_URL"] or None,
            region_name=config["S3_REGION"] or None,
            aws_access_key_id=config["S3_ACCESS_KEY_ID"] or None,
            aws_secret_access_key=config["S3_SECRET_ACCESS_KEY"] or None,
        )

    def save(self, image: Image, data: bytes) -> None:
        """Upload the object."""
        self.client.put_object(Bucket=self.bucket, Key=self.prefix + image.filename, Body=data, ContentType=image.mime)

    def load(self, image: Image) -> bytes:
        """Download the object."""
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.prefix + image.filename)
        except self.client.exceptions.NoSuchKey as exc:
            raise Missing(image.filename) from exc
        with contextlib.closing(response["Body"]) as body:
            return body.read()

    def delete(self, filenames: list[str]) -> None:
        """Delete the objects, up to 1,000 per request."""
        for start in range(0, len(filenames), 1000):
            keys = [{"Key": self.prefix + name} for name in filenames[start : start + 1000]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})


def backend_name(config: dict[str, Any]) -> str:
    """``IMAGE_STORAGE``, or the default for the configuration."""
    name = (config["IMAGE_STORAGE"] or "").strip().lower()
    if name and name not in BACKENDS:
        raise ConfigError(f"IMAGE_STORAGE is {name!r}: use one of {', '.join(BACKENDS)} (or leave it unset).")
    if name:
        return name
    if config["S3_BUCKET"]:
        return "s3"
    if config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        return "database"
    return "local"


def init_app(app: Flask) -> None:
    """Build the configured backend (a bad configuration stops start-up)."""
    files = LocalStorage(app.config["UPLOAD_FOLDER"] or os.path.join(app.instance_path, "uploads"))
    name = backend_name(app.config)
    backend: Storage = files
    if name == "database":
        backend = DatabaseStorage()
    elif name == "s3":
        backend = S3Storage(app.config)
    app.extensions["chatapp.storage"] = backend
    app.extensions["chatapp.storage.local"] = files


def current() -> Storage:
    """This app's backend."""
    return current_app.extensions["chatapp.storage"]


def local() -> LocalStorage:
    """The local folder (the backend itself, or where images stored before a switch may still be)."""
    return current_app.extensions["chatapp.storage.local"]


def load(image: Image) -> bytes:
    """The image's bytes; images stored as local files before a switch of backend are still found."""
    try:
        return current().load(image)
    except Missing:
        if current() is local():
            raise
        return local().load(image)


def delete(filenames: list[str]) -> None:
    """Remove the bytes of images whose rows are gone (and any local files left from before a switch)."""
    if not filenames:
        return
    current().delete(filenames)
    if current() is not local():
        local().delete(filenames)
