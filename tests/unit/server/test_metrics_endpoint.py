"""GET /metrics (aieval_server/metrics.py): who may read it, labels without ids, the database's counts, and
prometheus_client's multiprocess mode: separate processes record, one scrape sees them all, and what dead processes
leave is cleaned."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

ADMIN, PASSWORD = "root", "correct horse battery"
SCRAPER_TOKEN = "scraper-secret-0123456789"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value, as Prometheus would read the scrape."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(scrape: dict, name: str, **labels: str) -> float | None:
    return scrape.get((name, tuple(sorted(labels.items()))))


@pytest.fixture
def signed_in_app(settings):
    from aieval_server.main import create_app

    auth = settings.model_copy(update={"auth_enabled": True, "initial_admin_username": ADMIN,
                                       "initial_admin_password": SecretStr(PASSWORD),
                                       "metrics_token": SecretStr(SCRAPER_TOKEN)})
    with TestClient(create_app(auth)) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def session_of(client: TestClient, username: str) -> str:
    response = client.post("/api/v1/auth/login", json={"username": username, "password": PASSWORD})
    assert response.status_code == 200, response.text
    token = response.cookies["aieval_session"]
    client.cookies.clear()
    return token


def test_the_scraper_token_and_administrators_may_read_the_metrics_nobody_else(signed_in_app):
    client = signed_in_app
    admin = session_of(client, ADMIN)
    member = client.post("/api/v1/users", headers=bearer(admin),
                         json={"username": "member", "password": PASSWORD, "role": "member"})
    assert member.status_code == 201, member.text

    scraped = client.get("/metrics", headers=bearer(SCRAPER_TOKEN))
    assert scraped.status_code == 200, scraped.text
    assert scraped.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert client.get("/metrics", headers=bearer(admin)).status_code == 200
    refused = client.get("/metrics", headers=bearer(session_of(client, "member")))
    assert refused.status_code == 403 and "AIEVAL_METRICS_TOKEN" in refused.json()["detail"]
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=bearer(SCRAPER_TOKEN + "x")).status_code == 401
    # the token is a scraper's, not a session: it opens nothing else
    assert client.get("/api/v1/evaluations", headers=bearer(SCRAPER_TOKEN)).status_code == 401
    # a personal API token of an administrator (what a script would use) reads them too
    token = client.post("/api/v1/tokens", headers=bearer(admin), json={"name": "prometheus", "scope": "read"})
    assert token.status_code == 201, token.text
    assert client.get("/metrics", headers=bearer(token.json()["token"])).status_code == 200


def test_routes_are_labelled_by_template_and_evaluations_counted_from_the_database(client, settings):
    from aieval_server.db import session_scope
    from aieval_server.models import Evaluation

    with session_scope(settings.database_url) as session:
        session.add_all([Evaluation(name="waits", status="queued", queue="api"),
                         Evaluation(name="waits too", status="queued", queue="api"),
                         Evaluation(name="done", status="succeeded", queue="local")])
    assert client.get("/api/v1/evaluations/987654").status_code == 404
    assert client.get("/no/such/page.png").status_code == 404
    scrape_text = client.get("/metrics").text  # sign-in off: the local user, as every route
    scrape = samples(scrape_text)

    assert value(scrape, "aieval_http_request_duration_seconds_count", method="GET",
                 route="/api/v1/evaluations/{evaluation_id}", status="404") == 1
    assert value(scrape, "aieval_http_request_duration_seconds_count", method="GET", route="unmatched",
                 status="404") == 1
    assert "987654" not in scrape_text and "page.png" not in scrape_text  # no id, no typed path in a label
    assert value(scrape, "aieval_evaluations", state="queued") == 2
    assert value(scrape, "aieval_evaluations", state="succeeded") == 1
    assert value(scrape, "aieval_evaluations", state="running") == 0
    assert value(scrape, "aieval_queue_depth", queue="api") == 2
    assert value(scrape, "aieval_queue_depth", queue="local") == 0
    assert value(scrape, "aieval_queue_oldest_wait_seconds", queue="api") >= 0
    assert value(scrape, "aieval_database_up") == 1


RECORDER = textwrap.dedent("""
    import sys
    from aieval_server import metrics
    from aieval_server.config import Settings

    metrics.configure(Settings(data_dir=sys.argv[1]))
    metrics.evaluation_finished("succeeded", float(sys.argv[2]))
    metrics.WORKER_HEARTBEAT.labels(worker=sys.argv[3]).set(1000.0)
    print("recorded", flush=True)
    sys.stdin.read()  # alive until the test has scraped
""")


def test_separate_processes_record_and_one_scrape_sees_them_all(client, settings):
    from aieval_server import metrics

    writers = [subprocess.Popen([sys.executable, "-c", RECORDER, str(settings.data_dir), seconds, name],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
               for seconds, name in (("3", "worker-a"), ("40", "worker-b"))]
    try:
        for writer in writers:
            assert writer.stdout.readline().strip() == "recorded"
        scrape = samples(client.get("/metrics").text)
        assert value(scrape, "aieval_evaluation_duration_seconds_count", outcome="succeeded") == 2
        assert value(scrape, "aieval_evaluation_duration_seconds_sum", outcome="succeeded") == 43
        assert value(scrape, "aieval_evaluation_duration_seconds_bucket", outcome="succeeded", le="5.0") == 1
        for name in ("worker-a", "worker-b"):
            assert value(scrape, "aieval_worker_heartbeat_timestamp_seconds", worker=name) == 1000
    finally:
        for writer in writers:
            writer.communicate(timeout=30)
    # A process that exits takes its liveness with it; its counts stay until a process starting on this host
    # removes the files of processes that no longer run.
    scrape = samples(client.get("/metrics").text)
    assert value(scrape, "aieval_worker_heartbeat_timestamp_seconds", worker="worker-a") is None
    assert value(scrape, "aieval_evaluation_duration_seconds_count", outcome="succeeded") == 2
    directory = metrics.metrics_directory(settings)
    removed = metrics.remove_dead_processes_files(directory)
    assert sorted({path.stem.rsplit("_", 1)[-1] for path in removed}) == sorted(
        f"{metrics.HOST_ID}-{writer.pid}" for writer in writers)
    assert value(samples(client.get("/metrics").text), "aieval_evaluation_duration_seconds_count",
                 outcome="succeeded") is None


def test_a_worker_machine_without_an_api_serves_its_own_metrics(settings, unused_port):
    """`start_celery_worker.py --metrics-port`: what this machine's processes recorded, over HTTP."""
    import httpx

    from aieval_server import metrics

    metrics.configure(settings)
    metrics.evaluation_finished("failed", 7.0)
    server = metrics.serve_this_machine(settings, unused_port)
    try:
        response = httpx.get(f"http://127.0.0.1:{unused_port}/metrics", timeout=10)
    finally:
        server.shutdown()
        server.server_close()
    scrape = samples(response.text)
    assert value(scrape, "aieval_evaluation_duration_seconds_count", outcome="failed") == 1
    assert value(scrape, "aieval_evaluations", state="queued") is None  # the database's counts: the API's job
