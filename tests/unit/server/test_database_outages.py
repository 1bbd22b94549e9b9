"""The server's one rule for waiting out a database outage (db/outages.py), on real errors: a PostgreSQL server that
refuses connections (nothing listens on the port) is an outage to wait out; a bad statement on a working database
is not, and fails at once."""

from __future__ import annotations

import socket

import pytest
from sqlalchemy import create_engine, text


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed again when the block ends: nothing listens there


@pytest.fixture
def unreachable_database():
    engine = create_engine(f"postgresql+psycopg://aieval@127.0.0.1:{_closed_port()}/none",
                           connect_args={"connect_timeout": 2})
    yield engine
    engine.dispose()


def test_an_outage_is_retried_until_the_database_answers(unreachable_database, tmp_path):
    from sqlalchemy.exc import OperationalError

    from aieval_server.db.outages import DatabaseRetries, database_unavailable

    working = create_engine(f"sqlite:///{tmp_path / 'ok.db'}")
    calls = []

    def action():
        calls.append(len(calls))
        engine = unreachable_database if len(calls) < 3 else working  # the database is back on the third try
        with engine.connect() as connection:
            return connection.execute(text("SELECT 42")).scalar()

    with pytest.raises(OperationalError) as refused:
        unreachable_database.connect()
    assert database_unavailable(refused.value)  # connection refused: what a restarting PostgreSQL looks like
    assert DatabaseRetries(attempts=5, step_s=0.01, max_wait_s=0.02).run("test", action) == 42
    assert len(calls) == 3
    working.dispose()


def test_an_outage_longer_than_the_attempts_raises_after_the_last(unreachable_database):
    from sqlalchemy.exc import OperationalError

    from aieval_server.db.outages import DatabaseRetries

    calls = []

    def action():
        calls.append(1)
        with unreachable_database.connect():
            pass

    with pytest.raises(OperationalError):
        DatabaseRetries(attempts=3, step_s=0.01, max_wait_s=0.01).run("test", action)
    assert len(calls) == 3


def test_a_bad_statement_is_not_an_outage_and_fails_at_once(tmp_path):
    from sqlalchemy.exc import IntegrityError

    from aieval_server.db.outages import DatabaseRetries, database_unavailable

    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
        connection.execute(text("INSERT INTO t VALUES (1)"))
    calls = []

    def duplicate():
        calls.append(1)
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO t VALUES (1)"))

    with pytest.raises(IntegrityError) as raised:
        DatabaseRetries(attempts=5, step_s=10.0, max_wait_s=10.0).run("test", duplicate)
    assert calls == [1] and not database_unavailable(raised.value)
    engine.dispose()


def test_waits_grow_by_the_step_up_to_the_cap():
    from aieval_server.db.outages import DatabaseRetries

    policy = DatabaseRetries(attempts=8, step_s=1.0, max_wait_s=5.0)
    assert [policy.wait_after(failures) for failures in range(1, 8)] == [1.0, 2.0, 3.0, 4.0, 5.0, 5.0, 5.0]
