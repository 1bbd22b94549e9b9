"""Alembic environment: the URL comes from the caller (db/migrate.py) or, by default, from the settings."""

from __future__ import annotations

from alembic import context

from aieval_server.db import Base, make_engine
from aieval_server.models import tables  # noqa: F401  (registers the tables)

config = context.config
url = config.get_main_option("sqlalchemy.url")
if not url:
    from aieval_server.config import get_settings

    url = get_settings().database_url


def render_item(type_, obj, autogen_context):
    """Migrations must not import application types: UTCDateTime is stored as a plain DateTime(timezone=True)."""
    from aieval_server.models.tables import UTCDateTime

    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def run_migrations_offline() -> None:
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(url)
    with engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            # Batch mode recreates a SQLite table (copy, drop, rename); with foreign keys enforced, dropping a
            # table other rows refer to would fail (RESTRICT) or delete those rows (CASCADE). The pragma only
            # takes effect outside a transaction; the connection is discarded afterwards.
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.commit()
        # batch mode lets later ALTERs work on SQLite too
        context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True,
                          render_item=render_item)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
