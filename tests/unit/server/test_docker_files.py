"""The container set-up stays in step with the code: every AIEVAL_* variable it sets is a setting the server
reads, and every command it runs exists with the options it passes. (Images cannot be pulled here, so this is
what can be checked without Docker Hub.)"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[3]
COMPOSE = REPO / "docker" / "docker-compose.yml"


def _setting_names() -> set[str]:
    from aieval_server.config import Settings

    return {f"AIEVAL_{name.upper()}" for name in Settings.model_fields}


def test_every_aieval_variable_of_the_container_files_is_a_setting():
    texts = [COMPOSE.read_text(), *(p.read_text() for p in (REPO / "docker").glob("*.dockerfile"))]
    used = set(re.findall(r"\bAIEVAL_[A-Z0-9_]*[A-Z0-9]\b", "\n".join(texts)))
    # Read by the web image's nginx template (configs/deploy/nginx.conf), not by the server.
    nginx_only = {"AIEVAL_API_UPSTREAM", "AIEVAL_MAX_UPLOAD", "AIEVAL_WEB_ROOT"}
    assert used - nginx_only <= _setting_names(), sorted(used - nginx_only - _setting_names())
    assert {"AIEVAL_DB_URL", "AIEVAL_BROKER_URL", "AIEVAL_SECRET_KEY", "AIEVAL_STORAGE"} <= used


def test_compose_commands_exist_with_the_options_they_pass():
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    for name in ("migrate", "api", "worker"):
        command = services[name]["command"]
        assert command[0] == "python" and (REPO / command[1]).is_file(), (name, command)
        options = [arg for arg in command[2:] if arg.startswith("--")]
        help_text = subprocess.run([sys.executable, str(REPO / command[1]), "--help"], cwd=REPO, capture_output=True,
                                   text=True, timeout=120).stdout
        missing = [option for option in options if option not in help_text]
        assert not missing, f"{name}: {shlex.join(command)} passes options its script does not know: {missing}"
    assert services["api"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert all(services[s]["environment"]["AIEVAL_ENV"] == "prod" for s in ("migrate", "api", "worker"))
