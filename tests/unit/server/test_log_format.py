"""AIEVAL_LOG_FORMAT=json: one JSON object per line with the request and evaluation ids, secrets removed; the
X-Request-ID a request brings is kept (when it is a plain token) and answered; the quiet console of `aieval serve`."""

from __future__ import annotations

import io
import json
import logging

import pytest
from fastapi.testclient import TestClient

from aieval_server.log_config import (
    JsonFormatter,
    OnlyApiRequests,
    RedactSecrets,
    evaluation_context,
    logging_config,
    request_id_var,
)


@pytest.fixture
def json_lines():
    """A logger writing JSON lines into a buffer through the same filter and formatter as the configured handler."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.addFilter(RedactSecrets(secrets=["s3cr3t-metrics-token"]))
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("aieval_server.test_log_format")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield logger, lambda: [json.loads(line) for line in buffer.getvalue().splitlines()]
    finally:
        logger.removeHandler(handler)


def test_a_json_line_has_timestamp_level_logger_message_and_the_ids_in_force(json_lines):
    logger, lines = json_lines
    logger.info("outside %s", "anything")
    token = request_id_var.set("req-1")
    try:
        with evaluation_context(42):
            logger.warning("inside evaluation %d", 42)
    finally:
        request_id_var.reset(token)
    outside, inside = lines()
    assert set(outside) == {"timestamp", "level", "logger", "message"}
    assert outside["message"] == "outside anything" and outside["level"] == "INFO"
    assert outside["logger"] == "aieval_server.test_log_format" and outside["timestamp"].endswith("+00:00")
    assert inside["request_id"] == "req-1" and inside["evaluation_id"] == 42 and inside["level"] == "WARNING"


def test_secrets_never_reach_a_line_message_or_traceback(json_lines):
    logger, lines = json_lines
    logger.info("connecting to postgresql+psycopg://aieval:hunter2@db:5432/aieval with s3cr3t-metrics-token")
    logger.info("header Authorization: Bearer abcdefghijklmnop and token aiev_0123456789abcdef")
    try:
        raise RuntimeError("the broker redis://:pa55word@redis:6379/0 refused s3cr3t-metrics-token")
    except RuntimeError:
        logger.exception("failed")
    text = "\n".join(json.dumps(line) for line in lines())
    for secret in ("hunter2", "s3cr3t-metrics-token", "abcdefghijklmnop", "0123456789abcdef", "pa55word"):
        assert secret not in text, secret
    connecting, header, failed = lines()
    assert connecting["message"] == "connecting to postgresql+psycopg://***@db:5432/aieval with ***"
    assert header["message"] == "header Authorization: Bearer *** and token aiev_***"
    assert failed["message"] == "failed" and "RuntimeError: the broker redis://***@redis:6379/0" in failed["exception"]


def test_the_secret_settings_are_redacted_without_being_named(monkeypatch, settings):
    from aieval_server.config import get_settings

    monkeypatch.setenv("AIEVAL_METRICS_TOKEN", "prometheus-scrape-token-value")
    get_settings.cache_clear()
    try:
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "token is %s", ("prometheus-scrape-token-value",),
                                   None)
        RedactSecrets().filter(record)
        assert record.getMessage() == "token is ***"
    finally:
        get_settings.cache_clear()


def test_the_request_id_is_kept_or_made_answered_and_on_the_request_s_lines(settings, json_lines):
    from aieval_server.main import create_app

    logger, lines = json_lines
    app = create_app(settings)

    @app.get("/api/v1/test-log-line", include_in_schema=False)
    def _log_a_line() -> dict:  # a sync route: runs in a worker thread, as most routes do
        logger.info("handling the request")
        return {}

    with TestClient(app) as client:
        kept = client.get("/api/v1/test-log-line", headers={"X-Request-ID": "nginx-0f3a9c"})
        assert kept.headers["x-request-id"] == "nginx-0f3a9c"
        forged = client.get("/api/v1/health", headers={"X-Request-ID": "x" * 65})
        made = client.get("/api/v1/health", headers={"X-Request-ID": "two words"})
    assert len(forged.headers["x-request-id"]) == 32 and len(made.headers["x-request-id"]) == 32
    assert forged.headers["x-request-id"] != made.headers["x-request-id"]
    handled = [line for line in lines() if line["message"] == "handling the request"]
    assert [line["request_id"] for line in handled] == ["nginx-0f3a9c"]
    assert request_id_var.get() is None  # nothing left behind


def _access(path: str, status: int) -> logging.LogRecord:
    return logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                             ("127.0.0.1:5000", "GET", path, "1.1", status), None)


def test_access_lines_are_kept_for_the_api_and_failures_not_for_ui_files():
    keep = OnlyApiRequests().filter
    assert keep(_access("/api/v1/evaluations?page=2", 200)) and keep(_access("/metrics", 200))
    assert not keep(_access("/assets/index-3f2a.js", 200)) and not keep(_access("/evaluations/3", 200))
    assert keep(_access("/assets/missing.js", 404))


def test_the_quiet_console_and_the_json_configuration(settings):
    quiet = logging_config(settings, quiet=True)
    assert quiet["root"]["level"] == "WARNING"  # no level set: only what needs a person
    assert quiet["loggers"]["uvicorn.access"]["level"] == "WARNING"
    assert quiet["loggers"]["py.warnings"]["level"] == "ERROR"
    assert "format" in quiet["formatters"]["lines"]
    chosen = logging_config(settings.model_copy(update={"log_level": "INFO"}, deep=True), quiet=True)
    assert chosen["root"]["level"] in ("INFO", "WARNING")  # model_copy does not mark the field as set
    as_json = logging_config(settings.model_copy(update={"log_format": "json"}), quiet=True)
    assert as_json["formatters"]["lines"]["()"].endswith("JsonFormatter")
    assert as_json["root"]["level"] == "INFO" and as_json["loggers"]["uvicorn.access"]["filters"] == ["api_requests"]
