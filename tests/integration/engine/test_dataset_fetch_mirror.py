"""`aieval datasets fetch` against a loopback HTTP mirror of OpenCompass' download server (never the internet).

The mirror serves a crafted gsm8k.zip at OpenCompass' path (/datasets/data/gsm8k.zip). Its md5 is not the one
OpenCompass publishes, so the fetch is refused unless the site's own checksum is given as OpenCompass itself takes
it: `~/.OPENCOMPASS_INTERNAL_DATA_URL.json` (same key, same URL, the site's md5). The real GSM8K data is used when
../shared/datasets has it, so the imported benchmark is the real one.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest
from body_hash_openai import BodyHashEndpoint

from aieval_engine.catalogue import data_packages

SHARED_GSM8K = Path(__file__).resolve().parents[3].parent / "shared" / "datasets" / "gsm8k"


class RecordingHandler(http.server.SimpleHTTPRequestHandler):
    requested: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's naming)
        RecordingHandler.requested.append(self.path)
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def mirror(tmp_path):
    """A copy of OpenCompass' download tree holding a gsm8k.zip, served on 127.0.0.1."""
    root = tmp_path / "mirror"
    folder = root / "datasets" / "data"
    folder.mkdir(parents=True)
    archive = folder / "gsm8k.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
        if SHARED_GSM8K.is_dir():
            for file in sorted(SHARED_GSM8K.iterdir()):
                bundle.write(file, f"gsm8k/{file.name}")
        else:
            rows = [{"question": f"What is {i} + {i}?", "answer": f"{i} + {i} = {2 * i}\n#### {2 * i}"} for i in range(8)]
            text = "".join(json.dumps(r) + "\n" for r in rows)
            bundle.writestr("gsm8k/test.jsonl", text)
            bundle.writestr("gsm8k/train.jsonl", text)
    RecordingHandler.requested = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(RecordingHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hashlib.md5(archive.read_bytes()).hexdigest()
    finally:
        server.shutdown()
        server.server_close()


def aieval(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": str(tmp_path / "home"), "AIEVAL_DATA_DIR": str(tmp_path / "data"),
           "COLUMNS": "200"}
    env.pop("COMPASS_DATA_CACHE", None)
    env.pop("AIEVAL_DATA_MIRROR", None)
    return subprocess.run([sys.executable, "-m", "aieval_engine.cli", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def test_fetch_through_a_loopback_mirror_checks_the_md5_and_makes_gsm8k_ready(tmp_path, mirror):
    base, md5 = mirror
    (tmp_path / "home").mkdir()
    data = tmp_path / "data" / "compass" / "data"

    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({
        "models": [{"kind": "openai", "name": "endpoint", "base_url": "http://127.0.0.1:9/v1", "model": "m"}],
        "datasets": [{"kind": "builtin", "config": "gsm8k_gen"}], "params": {"limit": 4}}))
    unrunnable = aieval(tmp_path, "check", str(spec))
    assert unrunnable.returncode == 2 and "gsm8k.zip" in unrunnable.stdout  # says what to import

    listed = aieval(tmp_path, "datasets", "list", "--missing")
    assert listed.returncode == 0, listed.stderr
    assert "gsm8k.zip" in listed.stdout and "aieval datasets fetch gsm8k" in listed.stdout

    # The mirror's file is not OpenCompass' gsm8k.zip: its published md5 refuses it and nothing is installed.
    refused = aieval(tmp_path, "datasets", "fetch", "gsm8k", "--mirror", base)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "OpenCompass publishes" in refused.stdout and md5 in refused.stdout
    assert not (data / "gsm8k").exists()
    assert RecordingHandler.requested == ["/datasets/data/gsm8k.zip"]  # the mirror got OpenCompass' path

    # The site's own checksum, given the way OpenCompass takes it (same key and URL, its own md5).
    key, package = next((k, p) for k, p in data_packages().items() if p.archive_name == "gsm8k.zip")
    (tmp_path / "home" / ".OPENCOMPASS_INTERNAL_DATA_URL.json").write_text(json.dumps({key: {"url": package.url,
                                                                                           "md5": md5}}))
    fetched = aieval(tmp_path, "datasets", "fetch", "gsm8k_gen", "--mirror", base)
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    ready_line = next(line for line in fetched.stdout.splitlines() if "benchmarks now ready:" in line)
    assert "gsm8k" in ready_line.split(":", 1)[1].replace(",", " ").split()
    assert "matches the published checksum" in fetched.stdout
    assert (data / "gsm8k" / "test.jsonl").is_file()
    assert RecordingHandler.requested == ["/datasets/data/gsm8k.zip"] * 2

    runnable = aieval(tmp_path, "check", str(spec))
    assert runnable.returncode == 0 and "data present" in runnable.stdout, runnable.stdout + runnable.stderr
    # ... and it runs, offline: OpenCompass' stock gsm8k_gen config on the imported data, against a loopback model.
    endpoint = BodyHashEndpoint()
    try:
        spec.write_text(json.dumps({
            "models": [{"kind": "openai", "name": "endpoint", "base_url": endpoint.url, "model": "m"}],
            "datasets": [{"kind": "builtin", "config": "gsm8k_gen"}], "params": {"limit": 4, "max_out_len": 16}}))
        ran = aieval(tmp_path, "run", str(spec), "--json")
    finally:
        endpoint.close()
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    result = json.loads(ran.stdout)
    assert result["status"] == "succeeded" and len(endpoint.questions_answered()) == 4
    assert [score["dataset"] for score in result["scores"]] == ["gsm8k"]  # the abbr of the stock config

    again = aieval(tmp_path, "datasets", "fetch", "gsm8k_gen", "--mirror", base)
    assert again.returncode == 0 and "already here" in again.stdout
    assert len(RecordingHandler.requested) == 2  # nothing downloaded twice

    ready = aieval(tmp_path, "datasets", "list", "--ready", "--configs")
    assert "gsm8k_gen" in ready.stdout and "gsm8k " in ready.stdout
    assert aieval(tmp_path, "datasets", "--available").stdout.split().count("gsm8k_gen") == 1


def test_a_mirror_the_outbound_policy_refuses_is_never_contacted(tmp_path, mirror):
    base, _ = mirror
    (tmp_path / "home").mkdir()
    policy = json.dumps({"allow_loopback": False, "allow_private": False, "allow_networks": []})
    env = {**os.environ, "HOME": str(tmp_path / "home"), "AIEVAL_DATA_DIR": str(tmp_path / "data"),
           "AIEVAL_OUTBOUND_POLICY": policy, "AIEVAL_DATA_MIRROR": base, "COLUMNS": "200"}
    env.pop("COMPASS_DATA_CACHE", None)
    refused = subprocess.run([sys.executable, "-m", "aieval_engine.cli", "datasets", "fetch", "gsm8k"],
                             capture_output=True, text=True, env=env, timeout=300)
    assert refused.returncode == 2
    assert "refused by the outbound policy" in refused.stdout
    assert RecordingHandler.requested == []
