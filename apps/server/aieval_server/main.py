"""The FastAPI application factory."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from pathlib import PurePosixPath

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.exc import StaleDataError
from starlette.exceptions import HTTPException

from . import metrics
from .api_docs import add_api_docs
from .config import Settings, get_settings
from .routers import (
    audit,
    auth,
    compare,
    datasets,
    evaluations,
    health,
    live,
    models,
    monitoring,
    notifications,
    paired,
    schedules,
    sso,
    tokens,
    users,
)
from .routers.deps import caller_dep
from .security import RequestGuard, ResponseHardening
from .services.errors import ServiceError, error_response
from .storage import StorageError
from .upload_limit import RefuseOversizedUploads

log = logging.getLogger(__name__)
API_PREFIX = "/api/v1"


class SinglePageApp(StaticFiles):
    """The built UI (apps/web/dist) with the history-mode fallback: a path that is no file and looks like a client
    route (/evaluations/12, typed, reloaded or pasted) gets index.html, so the router can open that page. Server
    paths (/api, /docs, /redoc, /openapi.json, /metrics), anything under /assets/ and names with an extension keep their
    404. Cache headers as in configs/deploy/nginx.conf: hashed /assets/ files for a year, index.html always revalidated."""

    SERVER_PATHS = frozenset({"api", "docs", "redoc", "openapi.json", "assets", "metrics"})

    @classmethod
    def is_client_route(cls, path: str) -> bool:
        parts = PurePosixPath(path).parts
        return not parts or (parts[0] not in cls.SERVER_PATHS and not PurePosixPath(parts[-1]).suffix)

    async def get_response(self, path: str, scope) -> Response:
        try:
            response = await super().get_response(path, scope)
        except HTTPException as exc:
            if exc.status_code != 404 or not self.is_client_route(path):
                raise
            path = "index.html"
            response = await super().get_response(path, scope)
        if path.startswith("assets/"):
            response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
        elif path in (".", "index.html"):
            response.headers["Cache-Control"] = "no-cache"
        return response


def _problem_lines(exc: RequestValidationError) -> list[str]:
    lines = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body",))
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        lines.append(f"{where}: {message}" if where else message)
    return lines


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    settings.check_production_ready()
    metrics.configure(settings)  # this process' metrics files, before anything is recorded

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from starlette.concurrency import run_in_threadpool

        from .services import bootstrap

        await run_in_threadpool(bootstrap.prepare_database, settings)
        if settings.register_demo:
            await run_in_threadpool(bootstrap.register_demo, settings)
        yield

    app = FastAPI(title="ai-eval-system", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Evaluate LLMs with OpenCompass: models, datasets, evaluations, results.")
    app.state.settings = settings

    add_api_docs(app)  # /docs and /redoc with local assets

    @app.exception_handler(HTTPException)
    async def _http_error(_request: Request, exc: HTTPException):
        # The app's error shape also for the router's own 404/405 (an unknown /api/... path is JSON, not the UI).
        if exc.status_code in (204, 304):  # no body allowed
            return Response(status_code=exc.status_code, headers=exc.headers)
        return error_response(exc.status_code, exc.detail, headers=exc.headers)

    @app.exception_handler(ServiceError)
    async def _service_error(_request: Request, exc: ServiceError):
        retry_after = getattr(exc, "retry_after_s", None)  # RateLimited: when asking again can succeed
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        return error_response(exc.status_code, exc.message, exc.problems, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError):
        problems = _problem_lines(exc)
        return error_response(422, "the request is not valid: " + "; ".join(problems), problems)

    @app.exception_handler(StaleDataError)
    @app.exception_handler(IntegrityError)
    async def _concurrent_change(_request: Request, exc: Exception):
        # Another request deleted or changed the same rows between this one's read and its write (the services
        # check first, so only a race gets here): the caller can reload and decide again.
        log.info("concurrent change refused: %s", str(exc).splitlines()[0][:300])
        return error_response(409, "another request changed or deleted the same item at the same time; reload and "
                                   "try again")

    @app.exception_handler(StorageError)
    async def _storage_error(_request: Request, exc: StorageError):
        return error_response(404, str(exc))

    app.add_middleware(RefuseOversizedUploads, paths=(f"{API_PREFIX}/datasets", f"{API_PREFIX}/datasets/validate"),
                       settings=settings)
    app.add_middleware(RefuseOversizedUploads, paths=(f"{API_PREFIX}/datasets/packages",), settings=settings,
                       limit_setting="max_data_package_bytes")
    # The UI bundle is ~1.5 MB raw, ~0.5 MB gzipped; JSON lists compress as well.
    app.add_middleware(GZipMiddleware, minimum_size=1024)
    if settings.allowed_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.allowed_origins, allow_methods=["*"],
                           allow_headers=["*"])
    app.add_middleware(RequestGuard, settings=settings)
    app.add_middleware(metrics.RequestLatency)  # every answer timed, the guard's refusals too
    # Outermost: its headers and request id are also on the guard's refusals, the 413 above and every error.
    app.add_middleware(ResponseHardening)
    # Only these answer without a session when sign-in is on; every other router gets the caller dependency
    # here, so no route can forget it (routers/deps.caller_dep: 401, CSRF check, WebSockets refused).
    for router in (health.router, auth.public, sso.public):
        app.include_router(router, prefix=API_PREFIX)
    # Where Prometheus looks by default; its own access rule (the scraper's token or an administrator).
    app.include_router(monitoring.router)
    for router in (auth.router, users.router, models.router, datasets.router, evaluations.router, live.router,
                   compare.router, paired.router, tokens.router, audit.router, notifications.router,
                   notifications.deliveries, schedules.router):
        app.include_router(router, prefix=API_PREFIX, dependencies=[Depends(caller_dep)])
    if (settings.web_dist / "index.html").is_file():
        app.mount("/", SinglePageApp(directory=settings.web_dist, html=True), name="web")
    return app
