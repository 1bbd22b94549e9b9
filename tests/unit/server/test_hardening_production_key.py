"""Issue 8, finding 3: in production (AIEVAL_ENV=prod) the API and the workers refuse to start without
AIEVAL_SECRET_KEY, saying how to generate one. Without it each machine would generate its own key, and workers
could not decrypt the API keys the API stored. Checked through the real entry points, in subprocesses."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cryptography.fernet import Fernet

REPO = Path(__file__).resolve().parents[3]
GENERATE = 'python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'


def _entry_points() -> dict[str, list[str]]:
    """Every way the platform's processes are started (README, docker-compose.yml, `aieval serve`); should one not
    refuse, it listens on loopback only."""
    from aieval_engine.local_server import free_port

    local = ["--host", "127.0.0.1", "--port"]
    return {
        "API script": [sys.executable, "apps/server/start_fastapi_server.py", *local, str(free_port())],
        "API factory": [sys.executable, "-m", "uvicorn", "aieval_server.main:create_app", "--factory", *local,
                        str(free_port())],
        "worker script": [sys.executable, "apps/server/start_celery_worker.py"],
        "worker module": [sys.executable, "-m", "aieval_server.worker"],
        "aieval serve": [sys.executable, "-m", "aieval_server", "serve", *local, str(free_port())],
    }


def _start_all(tmp_path: Path, **env: str) -> dict[str, subprocess.CompletedProcess]:
    """Start every entry point at once (they share two cores) with only the given AIEVAL_* settings; each must end
    by itself, before it opens a port or reaches the (unreachable) production database."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AIEVAL_")}
    clean.update({"AIEVAL_DATA_DIR": str(tmp_path / "data"), **env})
    started = {name: (argv, subprocess.Popen(argv, cwd=REPO, env=clean, stdout=subprocess.PIPE,
                                             stderr=subprocess.PIPE, text=True, start_new_session=True))
               for name, argv in _entry_points().items()}
    finished, still_running = {}, []
    try:
        for name, (argv, process) in started.items():
            try:
                stdout, stderr = process.communicate(timeout=90)
            except subprocess.TimeoutExpired:
                still_running.append(name)
                continue
            finished[name] = subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)
    finally:
        for _argv, process in started.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.communicate()
    assert not still_running, f"started instead of refusing: {still_running}"
    return finished


@pytest.mark.parametrize("secret_key", [None, "", "not-a-fernet-key"], ids=["unset", "empty", "malformed"])
def test_every_entry_point_refuses_production_without_a_usable_secret_key(tmp_path, secret_key):
    env = {"AIEVAL_ENV": "prod"}
    if secret_key is not None:
        env["AIEVAL_SECRET_KEY"] = secret_key
    for name, result in _start_all(tmp_path, **env).items():
        assert result.returncode != 0, (name, result.stderr[-2000:])
        assert "AIEVAL_SECRET_KEY" in result.stderr and GENERATE in result.stderr, (name, result.stderr[-2000:])
    assert not (tmp_path / "data" / "secret.key").exists()  # no machine-local key was generated


def test_the_check_passes_with_a_key_and_outside_production(tmp_path):
    from aieval_server.config import NotProductionReady, Settings

    Settings(env="prod", secret_key=Fernet.generate_key().decode(), data_dir=tmp_path).check_production_ready()
    Settings(env="dev", data_dir=tmp_path).check_production_ready()  # embedded: a key generated on first use
    with pytest.raises(NotProductionReady, match="AIEVAL_SECRET_KEY"):
        Settings(env="prod", data_dir=tmp_path).check_production_ready()


def test_the_production_configuration_files_agree_with_the_check():
    """prod.yaml keeps secrets out (they come from the environment); the compose file refuses to start without the
    key and hands it to every server process; the example env file shows the same command as the error."""
    prod = yaml.safe_load((REPO / "configs" / "environments" / "prod.yaml").read_text())
    assert prod["env"] == "prod" and "secret_key" not in prod
    compose = yaml.safe_load((REPO / "docker" / "docker-compose.yml").read_text())
    for service in ("migrate", "api", "worker"):
        environment = compose["services"][service]["environment"]
        assert environment["AIEVAL_ENV"] == "prod"
        assert re.fullmatch(r"\$\{AIEVAL_SECRET_KEY:\?[^}]+\}", environment["AIEVAL_SECRET_KEY"]), environment
    example = (REPO / "docker" / "compose.env.example").read_text()
    assert GENERATE in example and re.search(r"^AIEVAL_SECRET_KEY=$", example, re.M)
