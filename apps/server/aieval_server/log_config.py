"""How the API and the workers log: quiet console lines (the default) or one JSON object per line
(AIEVAL_LOG_FORMAT=json, for log collectors), each with the id of the HTTP request or the evaluation it belongs to.

`logging_config(settings)` is a `logging.config.dictConfig` dictionary: `aieval serve`, the worker and
start_fastapi_server.py apply it, and uvicorn applies it again in each of its worker processes (its `log_config`).
Every line passes `RedactSecrets`: the values of the secret settings, credentials in URLs, bearer and personal API
tokens never reach a log."""

from __future__ import annotations

import contextlib
import json
import logging
import logging.config
import re
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Any

# Set by security.ResponseHardening for the duration of an HTTP request (also the X-Request-ID header).
request_id_var: ContextVar[str | None] = ContextVar("aieval_request_id", default=None)
# Set while a worker runs an evaluation (tasks/evaluation.py, services/runs.py).
evaluation_id_var: ContextVar[int | None] = ContextVar("aieval_evaluation_id", default=None)

CONSOLE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Libraries whose INFO lines are chatter on a quiet console (their warnings and errors still show).
QUIET_ON_CONSOLE = ("uvicorn.error", "celery", "kombu", "amqp", "httpx", "httpcore", "alembic", "transformers",
                    "datasets", "filelock", "urllib3", "botocore", "boto3", "s3transfer", "multipart",
                    "python_multipart")
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s:]*:[^/@\s]*@")
_BEARER = re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]{8,}")
_PERSONAL_TOKEN = re.compile(r"\baiev_[A-Za-z0-9_-]{8,}")
REDACTED = "***"


@contextlib.contextmanager
def evaluation_context(evaluation_id: int | None) -> Iterator[None]:
    """Log lines written inside the block (in this thread or task) carry `evaluation_id`."""
    token = evaluation_id_var.set(evaluation_id)
    try:
        yield
    finally:
        evaluation_id_var.reset(token)


def _secret_values() -> list[str]:
    from pydantic import SecretStr

    from .config import get_settings

    try:
        settings = get_settings()
    except Exception:  # settings that do not load are reported by the command itself, not by the logging
        return []
    values = []
    for name in type(settings).model_fields:
        value = getattr(settings, name, None)
        if isinstance(value, SecretStr):
            secret = value.get_secret_value()
            if len(secret) >= 4:  # a shorter one would blank out ordinary words
                values.append(secret)
    return sorted(values, key=len, reverse=True)


def redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    text = _URL_CREDENTIALS.sub(lambda m: m.group("scheme") + REDACTED + "@", text)
    text = _BEARER.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)
    return _PERSONAL_TOKEN.sub("aiev_" + REDACTED, text)


class RedactSecrets(logging.Filter):
    """Resolves each record's message once (arguments included) and removes secrets from it and its traceback;
    also puts the request and evaluation ids on the record for the formatters."""

    def __init__(self, name: str = "", secrets: list[str] | None = None) -> None:
        super().__init__(name)
        # None: the secret settings' values, read at the first record (the settings may not load before).
        self._secrets = sorted(secrets, key=len, reverse=True) if secrets is not None else None

    def filter(self, record: logging.LogRecord) -> bool:
        if self._secrets is None:
            self._secrets = _secret_values()
        record.msg, record.args = redact(record.getMessage(), self._secrets), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self._secrets)
        record.exc_info = None  # the redacted exc_text is what the formatters print
        record.request_id = request_id_var.get()
        record.evaluation_id = evaluation_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: timestamp (UTC, ISO 8601), level, logger, message, and request_id /
    evaluation_id / exception when there are."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("request_id", "evaluation_id"):
            value = getattr(record, key, None)
            if value is None:
                value = (request_id_var if key == "request_id" else evaluation_id_var).get()
            if value is not None:
                entry[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False, default=str)


class OnlyApiRequests(logging.Filter):
    """uvicorn's access lines for the API (and failed requests), not one per UI file."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        if len(args) >= 5:  # uvicorn: client, method, path with query, HTTP version, status
            path, status = str(args[2]), args[4]
            return path.startswith(("/api/", "/metrics")) or (isinstance(status, int) and status >= 400)
        return True


def logging_config(settings, *, quiet: bool = False, level: str | None = None) -> dict[str, Any]:
    """The dictConfig for `settings.log_format` (console or json) at `level` (default `settings.log_level`).
    `quiet` (`aieval serve` on a console): INFO lines, access lines and Python warnings left out, unless a level is
    set (AIEVAL_LOG_LEVEL; DEBUG shows everything). Otherwise access lines are kept for API requests and failures, not for UI files."""
    json_lines = settings.log_format == "json"
    level = (level or settings.log_level).upper()
    quiet = quiet and not json_lines and level != "DEBUG"
    if quiet and "log_level" not in settings.model_fields_set:
        # What the platform does is on its pages; the console says only what needs a person (warnings, errors).
        # AIEVAL_LOG_LEVEL=INFO brings the platform's own progress lines back.
        level = "WARNING"
    loggers: dict[str, Any] = {name: {"level": "WARNING"} for name in QUIET_ON_CONSOLE} if quiet else {}
    if quiet:  # the directory broker has no host name, and kombu says so at every connection
        loggers["kombu.connection"] = {"level": "ERROR"}
    # uvicorn's own handlers are replaced by ours (its loggers propagate to the root).
    loggers["uvicorn"] = {"handlers": [], "propagate": True, "level": level}
    loggers["uvicorn.access"] = ({"handlers": [], "propagate": False, "level": "WARNING"} if quiet else
                                 {"handlers": [], "propagate": True, "level": level, "filters": ["api_requests"]})
    # Python warnings of libraries (deprecations and the like) are for developers, not for a console.
    loggers["py.warnings"] = {"level": "ERROR" if quiet else level}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "context": {"()": "aieval_server.log_config.RedactSecrets"},
            "api_requests": {"()": "aieval_server.log_config.OnlyApiRequests"},
        },
        "formatters": {
            "lines": ({"()": "aieval_server.log_config.JsonFormatter"} if json_lines
                      else {"format": CONSOLE_FORMAT}),
        },
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr", "formatter": "lines",
                       "filters": ["context"]},
        },
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": loggers,
    }


def configure_logging(settings, *, quiet: bool = False, level: str | None = None) -> None:
    """Apply logging_config in this process; library warnings go through the logging (see py.warnings above)."""
    logging.config.dictConfig(logging_config(settings, quiet=quiet, level=level))
    logging.captureWarnings(True)
