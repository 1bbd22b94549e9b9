from __future__ import annotations

import os
import subprocess

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from server_it_helpers import PYTHON, REPO
from sqlalchemy import create_engine, inspect


def test_migrate_script_upgrades_and_downgrades_postgresql(postgres_url):
    import aieval_server.models  # noqa: F401  (registers every table on Base.metadata)
    from aieval_server.db import Base

    env = {**os.environ, "AIEVAL_DB_URL": postgres_url}
    # The production stack's database is shared with this module: use a schema of our own.
    engine = create_engine(postgres_url)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE SCHEMA IF NOT EXISTS migrations_check")
    url = postgres_url + "?options=-csearch_path%3Dmigrations_check"
    for argv in (["--url", url], ["--url", url, "--downgrade", "base"], ["--url", url]):
        done = subprocess.run([PYTHON, "scripts/migrate_db.py", *argv], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    checked = create_engine(url)
    with checked.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    assert {"models", "datasets", "evaluations", "evaluation_models", "scores"} <= set(inspect(checked).get_table_names())
    checked.dispose()
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP SCHEMA migrations_check CASCADE")
    engine.dispose()
