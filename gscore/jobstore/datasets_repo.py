"""Uploaded datasets: names -> stored files, and resolving a job's ``spec.dataset``."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from gscore.errors import DatasetError
from gscore.jobstore.db import UploadedDataset, utcnow
from gscore.jobstore.storage import Storage


class DatasetNameTaken(Exception):
    """The name is used by an uploaded dataset with other content, or by another owner's dataset (names are
    unique across owners)."""


class DatasetsRepo:
    def __init__(self, sessions: sessionmaker, storage: Storage) -> None:
        self.sessions, self.storage = sessions, storage

    def all(self, visible_to: str | None = None) -> list[UploadedDataset]:
        """Uploaded datasets of owner ``visible_to`` (None: every owner's), by name."""
        query = select(UploadedDataset).order_by(UploadedDataset.name)
        if visible_to is not None:
            query = query.where(UploadedDataset.owner == visible_to)
        with self.sessions() as session:
            return list(session.scalars(query))

    def get(self, name: str, visible_to: str | None = None) -> UploadedDataset | None:
        """The dataset, or None when there is none or it belongs to another owner than ``visible_to``."""
        if "\x00" in name:  # no stored name has one (and PostgreSQL refuses NUL in a string)
            return None
        with self.sessions() as session:
            record = session.get(UploadedDataset, name)
        if record is None or (visible_to is not None and record.owner != visible_to):
            return None
        return record

    def add(
        self, name: str, sha256: str, size_bytes: int, summary: dict, owner: str | None = None
    ) -> tuple[UploadedDataset, bool]:
        """Register ``name`` for ``owner``; (record, created). Same name, owner and content again is not an
        error."""
        existing = self.get(name)
        if existing is not None:
            if existing.sha256 != sha256 or existing.owner != owner:
                raise DatasetNameTaken(name)
            return existing, False
        record = UploadedDataset(
            name=name, sha256=sha256, size_bytes=size_bytes, created_at=utcnow(), summary=summary, owner=owner
        )
        try:
            with self.sessions() as session, session.begin():
                session.add(record)
        except IntegrityError:  # a concurrent upload registered the name first
            winner = self.get(name)
            if winner is None or winner.sha256 != sha256 or winner.owner != owner:
                raise DatasetNameTaken(name) from None
            return winner, False
        return record, True

    def resolve(
        self, name: str, builtin_names: tuple[str, ...], visible_to: str | None = None
    ) -> tuple[str | None, Path | None]:
        """(content hash, stored path) of an uploaded dataset of owner ``visible_to`` (None: any owner's);
        (None, None) for a built-in name."""
        if name in builtin_names:
            return None, None
        record = self.get(name, visible_to)
        if record is None:
            uploaded = ", ".join(d.name for d in self.all(visible_to)) or "none"
            raise DatasetError(
                f"unknown dataset {name!r}: built-in datasets are {', '.join(builtin_names)}; uploaded "
                f"datasets are {uploaded}; upload an .npz probe set with POST /v1/datasets"
            )
        return record.sha256, self.storage.dataset_path(record.sha256)
