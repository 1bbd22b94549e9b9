"""`aieval submit` (the command a CI pipeline runs) against a real `aieval serve` on 127.0.0.1: models registered or
reused, dataset files uploaded once, the evaluation followed to its end, and the exit codes a pipeline acts on."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
import yaml
from fake_openai import FakeChatEndpoint
from server_it_helpers import PYTHON, REPO, embedded_stack, free_port, start_embedded

from aieval_server.submit import SIGN_IN_MESSAGE

QA_ROWS = [{"question": "What is the capital of France?", "answer": "Paris"},
           {"question": "2 + 2 = ?", "answer": "4"},
           {"question": "Colour of the sky?", "answer": "blue"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_models):
    data_dir = tmp_path_factory.mktemp("submit-data")
    stack = embedded_stack(data_dir, tmp_path_factory.mktemp("submit-logs"))
    # Checkpoints are registered from under the model roots: by default <data dir>/models.
    stack.tiny = shutil.copytree(tiny_models[0], data_dir / "models" / "tiny")
    start_embedded(stack)
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def home(tmp_path) -> Path:
    """A HOME of its own, so that the machine's ~/.config/aieval/config.toml never plays a part."""
    path = tmp_path / "home"
    path.mkdir()
    return path


def run_submit(spec: Path, server_url: str, home: Path, *extra: str, env: dict[str, str] | None = None,
               timeout: float = 300) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AIEVAL_")}
    return subprocess.run(
        [PYTHON, "-m", "aieval_engine.cli", "submit", str(spec), "--server", server_url, "--poll-interval", "0.3", *extra],
        env={**clean, "HOME": str(home), "COLUMNS": "200", **(env or {})}, cwd=REPO, capture_output=True, text=True,
        timeout=timeout)


def write_spec(folder: Path, models: list[dict], datasets: list[dict] | None = None, **params) -> Path:
    qa = folder / "questions.jsonl"
    if not qa.exists():
        qa.write_text("".join(json.dumps(row) + "\n" for row in QA_ROWS))
    spec = folder / "spec.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "ci run", "models": models,
        "datasets": datasets or [{"kind": "custom", "name": "ci questions", "path": "questions.jsonl", "scorer": "contains"}],
        "params": {"limit": 2, "max_out_len": 4, **params}}))
    return spec


def output(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def test_submits_a_local_model_and_a_custom_file_and_reuses_them(server, tmp_path, home):
    spec = write_spec(tmp_path, [{"kind": "huggingface", "name": "tiny", "path": str(server.tiny)}])

    first = run_submit(spec, server.url, home)
    assert first.returncode == 0, output(first)
    assert "Results (succeeded)" in first.stdout and "ci questions" in first.stdout
    assert "registered as model" in first.stdout and "uploaded as dataset" in first.stdout

    # The second run finds both on the server; a score below the bar is exit 3, with the scores as JSON.
    second = run_submit(spec, server.url, home, "--json", "--fail-under", "101")
    assert second.returncode == 3, output(second)
    report = json.loads(second.stdout)
    assert report["status"] == "succeeded" and report["scores"]
    assert {s["dataset"] for s in report["scores"]} == {"ci questions"}
    assert len(report["below_fail_under"]) == len(report["scores"])
    assert "below --fail-under 101" in second.stderr
    assert "using the registered model" in second.stderr and "already on the server" in second.stderr
    assert [m["name"] for m in server.client.get("/models").json() if not m["is_demo"]] == ["tiny"]
    assert [d["name"] for d in server.client.get("/datasets", params={"kind": "custom"}).json()
            if not d["is_demo"]] == ["ci questions"]

    # Same name, other settings: refused rather than silently evaluating the registered model.
    other = write_spec(tmp_path, [{"kind": "huggingface", "name": "tiny", "path": str(server.tiny), "mode": "base"}])
    refused = run_submit(other, server.url, home)
    assert refused.returncode == 2, output(refused)
    assert "other settings" in refused.stdout and "mode: spec 'base', server 'chat'" in refused.stdout


def test_endpoint_key_comes_from_this_environment_and_is_never_printed(server, tmp_path, home):
    endpoint = FakeChatEndpoint(answer="Paris")
    secret = "sk-ci-secret-0123456789"
    try:
        spec = write_spec(tmp_path, [{"kind": "openai", "name": "fake endpoint", "base_url": endpoint.url,
                                      "model": "fake", "api_key_env": "CI_MODEL_KEY"}])
        missing = run_submit(spec, server.url, home)
        assert missing.returncode == 2 and "CI_MODEL_KEY is not set" in missing.stdout, output(missing)

        result = run_submit(spec, server.url, home, "--json", env={"CI_MODEL_KEY": secret})
        assert result.returncode == 0, output(result)
        assert json.loads(result.stdout)["status"] == "succeeded"
        assert endpoint.authorizations and set(endpoint.authorizations) == {f"Bearer {secret}"}
        assert secret not in output(result)
        registered = next(m for m in server.client.get("/models").json() if m["name"] == "fake endpoint")
        assert registered["has_api_key"] and "api_key_env" not in registered["settings"]
    finally:
        endpoint.close()


def test_a_failing_evaluation_exits_1_with_its_error(server, tmp_path, home):
    broken = shutil.copytree(server.tiny, server.data_dir / "models" / "broken")
    for weights in broken.glob("*.safetensors"):
        weights.write_bytes(b"not a safetensors file")
    spec = write_spec(tmp_path, [{"kind": "huggingface", "name": "broken", "path": str(broken)}])
    result = run_submit(spec, server.url, home)
    assert result.returncode == 1, output(result)
    assert "the evaluation failed" in result.stdout


def test_a_missing_file_exits_2_before_anything_is_sent(server, tmp_path, home):
    spec = write_spec(tmp_path, [{"kind": "huggingface", "name": "never registered", "path": str(server.tiny)}],
                      [{"kind": "custom", "name": "gone", "path": "nowhere.jsonl"}])
    result = run_submit(spec, server.url, home)
    assert result.returncode == 2
    assert f"no such file: {tmp_path / 'nowhere.jsonl'}" in result.stdout
    assert "never registered" not in [m["name"] for m in server.client.get("/models").json()]


class HeaderRecorder:
    """A loopback HTTP server that answers 401 (as a server with sign-in does) and keeps the headers it got."""

    def __init__(self):
        recorder = self
        self.authorizations: list[str | None] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                recorder.authorizations.append(self.headers.get("Authorization"))
                body = json.dumps({"detail": "sign in first", "problems": []}).encode()
                self.send_response(401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET  # noqa: N815

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_token_from_the_environment_or_a_private_config_file_is_sent_as_bearer(tmp_path, home, tiny_models):
    spec = write_spec(tmp_path, [{"kind": "huggingface", "name": "tiny", "path": str(tiny_models[0])}])
    recorder = HeaderRecorder()
    try:
        without = run_submit(spec, recorder.url, home)
        assert without.returncode == 2 and SIGN_IN_MESSAGE in without.stdout, output(without)
        assert recorder.authorizations == [None]

        from_env = run_submit(spec, recorder.url, home, env={"AIEVAL_TOKEN": "env-token-123"})
        assert from_env.returncode == 2 and "env-token-123" not in output(from_env)
        assert recorder.authorizations[-1] == "Bearer env-token-123"

        config = home / ".config" / "aieval" / "config.toml"
        config.parent.mkdir(parents=True)
        config.write_text(f'[servers."{recorder.url}/"]\ntoken = "file-token-456"\n'
                          '[servers."http://elsewhere.example"]\ntoken = "not-for-this-server"\n')
        config.chmod(0o644)
        calls = len(recorder.authorizations)
        exposed = run_submit(spec, recorder.url, home)
        assert exposed.returncode == 2 and "chmod 600" in exposed.stdout, output(exposed)
        assert len(recorder.authorizations) == calls, "nothing is sent when the config file is not private"

        config.chmod(0o600)
        from_file = run_submit(spec, recorder.url, home)
        assert from_file.returncode == 2 and "file-token-456" not in output(from_file)
        assert recorder.authorizations[-1] == "Bearer file-token-456"

        elsewhere = tmp_path / "other.toml"
        elsewhere.write_text(config.read_text())
        elsewhere.chmod(0o600)
        explicit = run_submit(spec, recorder.url, home, env={"AIEVAL_CONFIG": str(elsewhere)})
        assert explicit.returncode == 2 and recorder.authorizations[-1] == "Bearer file-token-456"
    finally:
        recorder.close()
