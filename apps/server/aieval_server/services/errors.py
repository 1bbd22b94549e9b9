from __future__ import annotations

from collections.abc import Mapping, Sequence

from starlette.responses import JSONResponse


def error_response(status_code: int, detail: str, problems: Sequence[str] = (), *,
                   headers: Mapping[str, str] | None = None, **extra) -> JSONResponse:
    """The app's one error shape, {"detail": a sentence for a person, "problems": one line per item}, for every
    refusal: route handlers, the exception handlers and the plain-ASGI guards in front of them."""
    return JSONResponse({"detail": detail, "problems": list(problems), **extra}, status_code=status_code,
                        headers=headers)


class ServiceError(Exception):
    """A request that cannot be done, with a message for a person and optional per-item problems."""

    status_code = 400

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.message = message
        self.problems = problems or []


class Unauthorized(ServiceError):
    status_code = 401


class Forbidden(ServiceError):
    status_code = 403


class NotFound(ServiceError):
    status_code = 404


class Invalid(ServiceError):
    status_code = 422


class Conflict(ServiceError):
    status_code = 409


class TooLarge(ServiceError):
    status_code = 413


class Unavailable(ServiceError):
    status_code = 503


class RateLimited(ServiceError):
    status_code = 429

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message)
        self.retry_after_s = retry_after_s
