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
    """The owner already has an uploaded dataset of this name with other content (names are per owner:
    another owner's dataset of the same name is no conflict, and is never revealed)."""


def _scope(owner: str | None) -> str:
    return owner or ""


class DatasetsRepo:
    def __init__(self, sessions: sessionmaker, storage: Storage) -> None:
        self.sessions, self.storage = sessions, storage

    def all(self, visible_to: str | None = None) -> list[UploadedDataset]:
        """Uploaded datasets of owner ``visible_to`` (None: every owner's), by name."""
        query = select(UploadedDataset).order_by(UploadedDataset.name, UploadedDataset.scope)
        if visible_to is not None:
            query = query.where(UploadedDataset.owner == visible_to)
        with self.sessions() as session:
            return list(session.scalars(query))

    def get(
        self, name: str, visible_to: str | None = None, owner: str | None = None
    ) -> UploadedDataset | None:
        """Owner ``owner``'s dataset ``name``; a caller that sees every owner (``visible_to`` None: an admin
        key, or no keys) whose own scope has none gets the oldest other owner's of that name. None when there
        is none it may see."""
        if "\x00" in name:  # no stored name has one (and PostgreSQL refuses NUL in a string)
            return None
        with self.sessions() as session:
            record = session.get(UploadedDataset, (_scope(owner if visible_to is None else visible_to), name))
            if record is None and visible_to is None:
                query = select(UploadedDataset).where(UploadedDataset.name == name)
                record = session.scalars(query.order_by(UploadedDataset.created_at).limit(1)).first()
        return record

    def add(
        self, name: str, sha256: str, size_bytes: int, summary: dict, owner: str | None = None
    ) -> tuple[UploadedDataset, bool]:
        """Register ``name`` for ``owner``; (record, created). The same name and content again is not an
        error; another owner's dataset of that name does not matter."""
        existing = self._own(name, owner)
        if existing is not None:
            if existing.sha256 != sha256:
                raise DatasetNameTaken(name)
            return existing, False
        record = UploadedDataset(
            scope=_scope(owner),
            name=name,
            sha256=sha256,
            size_bytes=size_bytes,
            created_at=utcnow(),
            summary=summary,
            owner=owner,
        )
        try:
            with self.sessions() as session, session.begin():
                session.add(record)
        except IntegrityError:  # a concurrent upload of this owner registered the name first
            winner = self._own(name, owner)
            if winner is None or winner.sha256 != sha256:
                raise DatasetNameTaken(name) from None
            return winner, False
        return record, True

    def _own(self, name: str, owner: str | None) -> UploadedDataset | None:
        with self.sessions() as session:
            return session.get(UploadedDataset, (_scope(owner), name))

    def resolve(
        self,
        name: str,
        builtin_names: tuple[str, ...],
        visible_to: str | None = None,
        owner: str | None = None,
    ) -> tuple[str | None, Path | None]:
        """(content hash, stored path) of uploaded dataset ``name`` as ``get`` finds it for a caller of
        ``owner`` who sees ``visible_to``; (None, None) for a built-in name."""
        if name in builtin_names:
            return None, None
        record = self.get(name, visible_to, owner)
        if record is None:
            uploaded = ", ".join(sorted({d.name for d in self.all(visible_to)})) or "none"
            raise DatasetError(
                f"unknown dataset {name!r}: built-in datasets are {', '.join(builtin_names)}; uploaded "
                f"datasets are {uploaded}; upload an .npz probe set with POST /v1/datasets"
            )
        return record.sha256, self.storage.dataset_path(record.sha256)
