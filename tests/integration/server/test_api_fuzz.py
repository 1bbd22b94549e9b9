"""schemathesis against the real API on PostgreSQL: every operation of the OpenAPI schema, fuzzed with valid
and invalid input (and followed through its OpenAPI links in the stateful phase), must never answer 5xx.

The API runs without a worker, so no evaluation is ever started, and the one operation that makes the server
contact a model's address (POST /models/{id}/test) is excluded: the fuzzer only ever talks to 127.0.0.1 and
the server only to its own database. schemathesis lives in its own venv (`make schemathesis-env`)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from server_it_helpers import REPO, Stack

SCHEMATHESIS = Path(os.environ.get("AIEVAL_SCHEMATHESIS", REPO / ".venv-schemathesis" / "bin" / "st"))
# Operations that make the server send a request to an address taken from user input.
CONTACTS_OUTSIDE = r"^/api/v1/models/\{model_id\}/test$"
# A fixed seed keeps CI reproducible; AIEVAL_FUZZ_SEED=random (or a number) explores further.
SEED = os.environ.get("AIEVAL_FUZZ_SEED", "20261201")
MAX_EXAMPLES = int(os.environ.get("AIEVAL_FUZZ_EXAMPLES", "40"))


@pytest.fixture
def api(tmp_path, own_postgres_url):
    stack = Stack({"AIEVAL_DATA_DIR": str(tmp_path / "data"), "AIEVAL_DB_URL": own_postgres_url,
                   # demo datasets give the fuzzer real ids to find; no worker converts or runs anything
                   "AIEVAL_REGISTER_DEMO": "true", "AIEVAL_PREPARE_DEMO_MODEL": "false"}, tmp_path)
    stack.start_api()
    try:
        yield stack
    finally:
        stack.stop()


def test_no_operation_answers_a_server_error(api, tmp_path):
    if not SCHEMATHESIS.exists():
        pytest.fail(f"schemathesis is not installed at {SCHEMATHESIS}: make schemathesis-env", pytrace=False)
    report = tmp_path / "schemathesis.json"
    argv = [str(SCHEMATHESIS), "run", f"{api.url}/openapi.json", "--checks", "not_a_server_error",
            "--exclude-path-regex", CONTACTS_OUTSIDE, "--max-examples", str(MAX_EXAMPLES), "--workers", "2",
            "--phases", "examples,coverage,fuzzing,stateful", "--request-timeout", "30", "--no-color",
            "--suppress-health-check", "all", "--report", "json", "--report-json-path", str(report)]
    if SEED != "random":
        argv += ["--seed", SEED]
    result = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert report.exists(), result.stdout[-5000:] + result.stderr[-3000:]
    summary = json.loads(report.read_text())
    cases = summary["test_cases"]["generated"]
    failures = summary["failures"]
    print(f"schemathesis {summary['schemathesis_version']}: {summary['operations']['tested']} operations, "
          f"{cases} test cases, {len(failures)} failure kinds, {len(summary['errors'])} errors")
    assert summary["operations"]["tested"] >= 20, summary["operations"]
    assert cases > 500
    assert not failures and not summary["errors"], result.stdout[-20000:]
    assert result.returncode == 0, result.stdout[-5000:]
    assert "Traceback" not in api.read_log("api.log"), api.read_log("api.log")[-5000:]
