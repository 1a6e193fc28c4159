"""Alembic environment: migrations run on the connection that :func:`gscore.jobstore.db.migrate_database` passes in
``config.attributes["connection"]`` (it holds the migration lock); SQLite gets batch mode for ALTERs."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from gscore.jobstore.db import Base, make_engine


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _main() -> None:
    if context.is_offline_mode():
        raise SystemExit(
            "gscore migrations run online only: use gscore.jobstore.db.prepare_database(settings)"
        )
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(context.config.get_main_option("sqlalchemy.url") or "")
    try:
        with engine.connect() as connection:
            _run(connection)
            connection.commit()
    finally:
        engine.dispose()


_main()
