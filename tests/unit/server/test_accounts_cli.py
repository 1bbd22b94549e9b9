"""`aieval create-admin` in a subprocess, the first administrator from the environment, and `aieval serve`
refusing a non-loopback address without sign-in."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from signed_in import sign_in
from threaded_server import uvicorn_in_thread

AIEVAL = str(Path(sys.executable).parent / "aieval")


def run_aieval(data_dir: Path, *args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "AIEVAL_ENV": "dev", "AIEVAL_DATA_DIR": str(data_dir), **env}
    environment.pop("AIEVAL_AUTH_ENABLED", None)
    return subprocess.run([AIEVAL, *args], input=stdin, env=environment, capture_output=True, text=True, timeout=120)


def test_create_admin_reads_the_password_from_stdin_and_the_account_signs_in(settings, tmp_path):
    data_dir = settings.data_dir
    short = run_aieval(data_dir, "create-admin", "Alice", "--password-stdin", stdin="tiny-secret\n")
    assert short.returncode == 1 and "at least 12 characters" in short.stderr, short.stderr
    assert "tiny-secret" not in short.stdout + short.stderr  # the password is never echoed
    done = run_aieval(data_dir, "create-admin", "Alice", "--password-stdin", stdin="alice's long password\n")
    assert done.returncode == 0, done.stderr
    assert "created the administrator 'alice'" in done.stdout and "AIEVAL_AUTH_ENABLED=true" in done.stdout
    again = run_aieval(data_dir, "create-admin", "alice", "--password-stdin", stdin="another long password\n")
    assert again.returncode == 1 and "taken" in again.stderr
    assert "--password" not in run_aieval(data_dir, "create-admin", "--help").stdout.replace("--password-stdin", "")

    from aieval_server.main import create_app

    with uvicorn_in_thread(create_app(settings.model_copy(update={"auth_enabled": True}))) as server:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.config.port}", timeout=30) as browser:
            state = sign_in(browser, "alice", "alice's long password")
            assert state["user"]["role"] == "admin"


def test_initial_admin_from_the_environment_once(settings, caplog):
    from aieval_server.services import accounts
    from aieval_server.services.bootstrap import prepare_database

    password = "initial admin password"
    configured = settings.model_copy(update={"initial_admin_username": "Boss",
                                             "initial_admin_password": SecretStr(password)})
    with caplog.at_level(logging.INFO, logger="aieval_server"):
        prepare_database(configured)
        prepare_database(configured.model_copy(update={"initial_admin_username": "other"}))  # there is an admin
    assert "'boss'" in caplog.text and password not in caplog.text
    assert accounts.has_admin(configured)
    from aieval_server.db import session_scope

    with session_scope(configured.database_url) as session:
        assert [(u.username, u.role) for u in accounts.list_users(session)] == [("boss", "admin")]


def test_initial_admin_with_a_short_password_stops_the_start(settings):
    from aieval_server.config import NotProductionReady
    from aieval_server.services.bootstrap import prepare_database

    configured = settings.model_copy(update={"initial_admin_username": "boss",
                                             "initial_admin_password": SecretStr("tiny-secret")})
    with pytest.raises(NotProductionReady, match="at least 12 characters") as stopped:
        prepare_database(configured)
    assert "tiny-secret" not in str(stopped.value)


def test_serve_on_all_addresses_needs_sign_in(tmp_path):
    refused = run_aieval(tmp_path / "data", "serve", "--host", "0.0.0.0", "--port", "1", "--no-worker")
    assert refused.returncode == 2, refused.stderr
    assert "AIEVAL_AUTH_ENABLED=true" in refused.stderr and "aieval create-admin" in refused.stderr
    assert not (tmp_path / "data" / "aieval.db").exists()  # refused before touching anything


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("localhost", True), ("::1", True),
                                            ("127.0.0.2", True), ("0.0.0.0", False), ("::", False),
                                            ("192.168.1.5", False), ("eval.example.com", False)])
def test_loopback_addresses(host, loopback):
    from aieval_server.cli import is_loopback

    assert is_loopback(host) is loopback
