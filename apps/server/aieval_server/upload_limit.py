"""The upload size limit, enforced while the body arrives: no upload is received, spooled or stored beyond it."""

from __future__ import annotations

from collections.abc import Collection

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .config import Settings
from .services.errors import error_response

# Room for the multipart framing around the file (boundaries, part headers, the small form fields); the upload
# service checks the file part itself against the exact limit.
MULTIPART_MARGIN = 64 * 1024


class _BodyOverLimit(Exception):
    """Raised from `receive` to stop whoever is reading the body (Starlette's form parser closes its spooled files)."""


class RefuseOversizedUploads:
    """Answer 413 to an upload whose body is over `max_upload_bytes` (+ MULTIPART_MARGIN): at once when its
    Content-Length says so, otherwise as soon as that many bytes have arrived (a chunked request declares no size).
    The body is counted before the form parser spools it to a temporary file, and reading stops at the limit.

    Plain ASGI rather than `@app.middleware("http")`, which costs every request a task and a stream; and not
    Starlette's RequestBodyLimitMiddleware, whose plain "Content Too Large" has neither the app's error shape
    ({"detail", "problems"}) nor the limit in it."""

    def __init__(self, app: ASGIApp, *, paths: Collection[str], settings: Settings,
                 limit_setting: str = "max_upload_bytes"):
        # limit_setting: the setting holding these paths' limit (data packages: max_data_package_bytes), read at
        # each request.
        self.app, self.paths, self.settings, self.limit_setting = app, frozenset(paths), settings, limit_setting

    @property
    def max_bytes(self) -> int:
        return getattr(self.settings, self.limit_setting)

    def _refusal(self) -> JSONResponse:
        limit = self.max_bytes // (1024 * 1024)
        return error_response(413, f"the file is larger than the limit of {limit} MiB")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.paths:
            return await self.app(scope, receive, send)
        allowed = self.max_bytes + MULTIPART_MARGIN
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > allowed:
            return await self._refusal()(scope, receive, send)

        received = 0
        refused = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > allowed:
                    raise _BodyOverLimit
            return message

        async def send_unless_refused(message: Message) -> None:
            nonlocal refused
            if received <= allowed:
                return await send(message)
            # The app is answering a body we cut short (FastAPI turns a failed form parse into its own 400):
            # the client gets the 413 instead, and the app's answer is dropped.
            if not refused:
                refused = True
                await self._refusal()(scope, receive, send)

        try:
            await self.app(scope, counting_receive, send_unless_refused)
        except Exception:
            if received <= allowed:
                raise
        if received > allowed and not refused:
            await self._refusal()(scope, receive, send)
