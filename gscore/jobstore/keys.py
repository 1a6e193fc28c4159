"""API keys: create (the secret is shown once), list, revoke, and check a presented key.

A key reads ``gsk_<id>_<secret>``: ``id`` (16 hex digits) is public and finds the row, ``secret`` (43
URL-safe characters, 256 bits) is stored only as its sha256 and compared in constant time. The key's
``name`` is the owner its jobs, collections and datasets are filed under; several keys may share a name
(rotate by creating a second key with the same name, then revoking the first). An admin key sees every
owner's rows.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import sessionmaker

from gscore.errors import ApiKeyError
from gscore.jobstore.db import ApiKey, utcnow

KEY_PREFIX = "gsk_"
KEY_ID_HEX_DIGITS = 16
KEY_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Principal:
    """Who makes a request: ``owner`` is the key's name (None when no key exists: a keyless loopback
    service, where everyone sees everything, as before keys existed)."""

    owner: str | None
    admin: bool
    key_id: str | None = None

    @property
    def visible_to(self) -> str | None:
        """The owner whose rows this caller may see; None: every row (an admin key, or no keys at all)."""
        return None if self.admin or self.owner is None else self.owner


KEYLESS = Principal(owner=None, admin=True)  # no API key exists: the service is bound to loopback only


def hash_secret(secret: str) -> str:
    """Hex sha256 of a key's secret part (what the table stores)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def split_key(presented: str) -> tuple[str, str] | None:
    """``(id, secret)`` of a well-formed key, else None."""
    if not presented.startswith(KEY_PREFIX):
        return None
    rest = presented[len(KEY_PREFIX) :]
    key_id, sep, secret = (
        rest[:KEY_ID_HEX_DIGITS],
        rest[KEY_ID_HEX_DIGITS : KEY_ID_HEX_DIGITS + 1],
        rest[KEY_ID_HEX_DIGITS + 1 :],
    )
    if sep != "_" or not secret or not re.fullmatch(r"[0-9a-f]+", key_id) or len(key_id) != KEY_ID_HEX_DIGITS:
        return None
    return key_id, secret


class ApiKeys:
    """The ``api_keys`` table."""

    def __init__(self, sessions: sessionmaker) -> None:
        self.sessions = sessions

    def create(self, name: str, *, admin: bool = False) -> tuple[ApiKey, str]:
        """A new key for owner ``name``.

        Returns
        -------
        (ApiKey, str)
            The stored record and the full key ``gsk_<id>_<secret>`` (not stored: show it once).
        """
        if not KEY_NAME_PATTERN.match(name):
            raise ApiKeyError(
                f"invalid key name {name!r}: use 1-64 lowercase letters, digits, '_', '.' or '-', "
                "starting with a letter or digit (e.g. team-a)"
            )
        key_id, secret = secrets.token_hex(KEY_ID_HEX_DIGITS // 2), secrets.token_urlsafe(32)
        record = ApiKey(
            id=key_id, name=name, secret_sha256=hash_secret(secret), admin=admin, created_at=utcnow()
        )
        with self.sessions() as session, session.begin():
            session.add(record)
        return record, f"{KEY_PREFIX}{key_id}_{secret}"

    def all(self) -> list[ApiKey]:
        """Every key, revoked ones too, oldest first."""
        with self.sessions() as session:
            return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)))

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke the key with public id ``key_id`` (revoking twice is not an error)."""
        with self.sessions() as session, session.begin():
            session.execute(
                update(ApiKey)
                .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
            record = session.get(ApiKey, key_id)
        if record is None:
            raise ApiKeyError(f"no API key with id {key_id!r}; `gscore keys list` shows the ids")
        return record

    def any_exist(self) -> bool:
        """True once a key was ever created (revoked ones count: revoking every key locks the API)."""
        with self.sessions() as session:
            return session.scalar(select(ApiKey.id).limit(1)) is not None

    def any_active(self) -> bool:
        with self.sessions() as session:
            return session.scalar(select(ApiKey.id).where(ApiKey.revoked_at.is_(None)).limit(1)) is not None

    def lookup(self, presented: str) -> ApiKey | None:
        """The record of ``presented`` if its secret matches (constant-time compare), revoked or not."""
        parts = split_key(presented)
        if parts is None:
            return None
        key_id, secret = parts
        with self.sessions() as session:
            record = session.get(ApiKey, key_id)
        if record is None or not hmac.compare_digest(record.secret_sha256, hash_secret(secret)):
            return None
        return record
