"""``gscore keys create/list/revoke``: API keys, managed on the service's database (``DATABASE_URL``), and the
start-up rule that a service without keys binds to loopback only."""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys

from gscore.errors import ApiKeyError

CREATE_KEY_HINT = "gscore keys create --name NAME --admin"
_KEY_COLUMNS = ("id", "name", "admin", "created_at", "revoked_at")


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1); False for ``0.0.0.0``, ``::``,
    other addresses and names."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind_allowed(host: str) -> None:
    """Refuse a non-loopback bind while no usable API key exists (anyone reaching the port would see and
    cancel every team's jobs). Migrates the database first (its ``api_keys`` table is read)."""
    if is_loopback(host):
        return
    if not _keys().any_active():
        raise ApiKeyError(
            f"refusing to listen on {host}: no API key exists, so anyone who reaches the port could read, "
            f"rank and cancel every job. Create one first with `{CREATE_KEY_HINT}` (same DATABASE_URL / "
            "GSCORE_DATA_DIR as the service), or bind to 127.0.0.1"
        )


def _keys():
    """The key store of the service's database (``DATABASE_URL``), migrated first."""
    from gscore.jobstore.db import make_session_factory, prepare_database
    from gscore.jobstore.keys import ApiKeys
    from gscore.settings import get_settings

    settings = get_settings()
    prepare_database(settings)
    return ApiKeys(make_session_factory(settings.resolved_database_url, migrate=False))


def _key_row(record) -> dict[str, object]:
    return {
        "id": record.id,
        "name": record.name,
        "admin": record.admin,
        "created_at": record.created_at.isoformat(),
        "revoked_at": record.revoked_at.isoformat() if record.revoked_at else None,
    }


def _create(args: argparse.Namespace) -> int:
    record, key = _keys().create(args.name, admin=args.admin)
    if args.json:
        print(json.dumps({**_key_row(record), "key": key}, indent=2))
    else:
        print(key)
        kind = "admin key" if record.admin else "key"
        print(
            f"created {kind} {record.id} for {record.name!r}; this is the only time the key is shown. "
            "Send it as `Authorization: Bearer <key>` (the CLI: --api-key or GSCORE_API_KEY).",
            file=sys.stderr,
        )
    return 0


def _list(args: argparse.Namespace) -> int:
    rows = [_key_row(record) for record in _keys().all()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print("\t".join(_KEY_COLUMNS))
    for row in rows:
        print("\t".join(str(row[c] if row[c] is not None else "-") for c in _KEY_COLUMNS))
    return 0


def _revoke(args: argparse.Namespace) -> int:
    record = _keys().revoke(args.key_id)
    print(f"revoked key {record.id} of {record.name!r}; requests with it now get 401")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("keys", help="API keys of the service: create, list, revoke")
    verbs = p.add_subparsers(dest="keys_verb", metavar="VERB")
    verbs.required = True
    q = verbs.add_parser("create", help="create a key and print it (once; only its hash is stored)")
    q.add_argument("--name", required=True, help="the owner its jobs are filed under, e.g. team-a")
    q.add_argument("--admin", action="store_true", help="sees every owner's jobs, collections and datasets")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_create)
    q = verbs.add_parser("list", help="every key (no secrets): id, name, admin, created, revoked")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_list)
    q = verbs.add_parser("revoke", help="revoke a key by its id (`gscore keys list`)")
    q.add_argument("key_id", metavar="ID")
    q.set_defaults(func=_revoke)
