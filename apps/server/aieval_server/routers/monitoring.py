"""GET /metrics: Prometheus' text format (aieval_server/metrics.py), at the path Prometheus scrapes by default.

Who may read it: the scraper presenting `AIEVAL_METRICS_TOKEN` as a bearer token, and administrators (their session
or personal API token). With sign-in off, the local user, as for every other route. Not public: the metrics name
models and show how busy the installation is."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from .. import metrics
from .deps import caller_dep, session_token

router = APIRouter(tags=["monitoring"])
ADMINS_OR_SCRAPER = ("only administrators and the scraper holding AIEVAL_METRICS_TOKEN (as a bearer token) may read "
                     "the metrics")


async def scraper_or_admin(connection: HTTPConnection) -> None:
    settings = connection.app.state.settings
    token, from_cookie = session_token(connection)
    expected = settings.metrics_token.get_secret_value() if settings.metrics_token else ""
    if expected and token and not from_cookie and hmac.compare_digest(token.encode(), expected.encode()):
        return
    caller = await caller_dep(connection)
    if not caller.is_admin:
        raise HTTPException(403, ADMINS_OR_SCRAPER)


@router.get("/metrics", response_class=Response, dependencies=[Depends(scraper_or_admin)],
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                             "description": "Prometheus text exposition format"}})
async def read_metrics(request: Request) -> Response:
    """Prometheus metrics of this installation: evaluations by state, queues, evaluation durations, samples
    scored, model endpoint latency, retries and failures by model, API latency by route, worker heartbeats."""
    body = await run_in_threadpool(metrics.exposition, request.app.state.settings)
    return Response(body, media_type=metrics.CONTENT_TYPE)
