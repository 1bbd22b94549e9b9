"""What every request passes through before the routes: the Host and Origin checks that keep other web sites and
foreign host names out, the security headers on every response, and the catch-all for unexpected errors.

Plain ASGI classes (see RefuseOversizedUploads in main.py): no task or stream per request, and WebSocket handshakes
go through the same checks as HTTP requests. docs/SECURITY.md explains the rules and their settings."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.websockets import WebSocket

from .log_config import request_id_var
from .services.errors import error_response

if TYPE_CHECKING:
    from .config import Settings

log = logging.getLogger(__name__)

# A browser sends no preflight for a form POST, so any request that can change something is checked, not only
# those a CORS preflight would cover.
STATE_CHANGING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
DEFAULT_PORTS = {"http": 80, "https": 443}
# A WebSocket's page is an http(s) page: its Origin is compared with the http scheme of the same connection.
PAGE_SCHEMES = {"ws": "http", "wss": "https", "http": "http", "https": "https"}
# A Host header as RFC 9110 allows it: a name or IPv4 address, or a bracketed IPv6 address, and an optional port.
# Nothing else passes, so a Host header can be reflected into the CSP below without escaping.
HOST_HEADER = re.compile(r"(?:(?P<name>[A-Za-z0-9._-]+)|\[(?P<ipv6>[0-9A-Fa-f:.]+)\])(?::(?P<port>[0-9]{1,5}))?")
HOST_PATTERN = re.compile(r"\*|(?:\*\.)?[a-z0-9._-]+|[0-9a-f:.]+")


@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_host_header(value: str) -> tuple[str, int | None] | None:
    """(host name lower-cased without brackets, port or None), or None for anything that is not a Host header."""
    match = HOST_HEADER.fullmatch(value)
    if match is None or (match["port"] is not None and int(match["port"]) > 65535):
        return None
    host = (match["name"] or match["ipv6"]).lower()
    return host, int(match["port"]) if match["port"] else None


def parse_origin(value: str) -> Origin | None:
    """An http(s) origin (scheme://host[:port], the form browsers send), or None ("null", paths, other schemes)."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if (scheme not in DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/") or parts.query
            or parts.fragment or parts.username is not None):
        return None
    return Origin(scheme, parts.hostname.lower(), port or DEFAULT_PORTS[scheme])


def normalize_trusted_host(entry: str) -> str:
    """A trusted_hosts entry as the checks compare it; ValueError with a message for a person otherwise."""
    host = entry.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not HOST_PATTERN.fullmatch(host) or (":" in host and host.count(":") < 2):
        raise ValueError(f"{entry!r} is not a host name: give names or addresses without scheme or port "
                         "(any port is accepted), '*.example.com' for subdomains, or '*' for any host")
    return host


def normalize_origin(entry: str) -> str:
    """An allowed_origins entry as scheme://host:port; ValueError with a message for a person otherwise."""
    origin = parse_origin(entry)
    if origin is None:
        raise ValueError(f"{entry!r} is not a web origin: give scheme://host[:port], e.g. https://tools.example.com "
                         "(no path; '*' is not accepted, list each origin)")
    return str(origin)


class RequestGuard:
    """Refuses, before any route runs:
    - a request or WebSocket whose Host header names no trusted host (400): a hostile DNS name pointed at this
      machine (DNS rebinding) makes the victim's browser send its own name, which is not in the list;
    - a state-changing request (POST/PUT/PATCH/DELETE) or WebSocket handshake from another site's page (403): its
      Origin header is neither this server's own origin nor one of allowed_origins, or, without Origin, the
      browser says `Sec-Fetch-Site: cross-site`. Requests without either header (curl, scripts) pass: forging a
      request needs a victim's browser, and browsers send Origin on cross-site POSTs and on every WebSocket."""

    def __init__(self, app, *, settings: Settings):
        self.app = app
        self.trusted_hosts = [normalize_trusted_host(host) for host in settings.trusted_hosts]
        self.allowed_origins = frozenset(parse_origin(origin) for origin in settings.allowed_origins)

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        refusal = self.refusal(scope, Headers(scope=scope))
        if refusal is None:
            return await self.app(scope, receive, send)
        status, detail = refusal
        log.warning("refused %s %s: %s", scope.get("method", "WEBSOCKET"), scope["path"], detail)
        if scope["type"] == "http":
            return await error_response(status, detail)(scope, receive, send)
        # Closed before accept: the server answers the handshake with 403. (A JSON denial response would reach no
        # one: browsers show scripts only a close event, and uvicorn logs it as an error.) The log line says why.
        websocket = WebSocket(scope, receive, send)
        await websocket.receive()  # the handshake request ("websocket.connect")
        await websocket.close(code=1008)  # policy violation

    def host_is_trusted(self, host: str) -> bool:
        return any(pattern == "*" or host == pattern or (pattern.startswith("*.") and host.endswith(pattern[1:]))
                   for pattern in self.trusted_hosts)

    def refusal(self, scope, headers: Headers) -> tuple[int, str] | None:
        # No name or value of this API contains a NUL, and PostgreSQL cannot even compare text with one: refused at
        # the door for every route instead of reaching the database as a 500.
        if "\x00" in scope["path"] or b"%00" in scope.get("query_string", b""):
            return 400, "the address contains a NUL character (%00); remove it"
        host_header = headers.get("host", "")
        host = parse_host_header(host_header)
        if host is None or not self.host_is_trusted(host[0]):
            return 400, (f"this server does not answer to the host name {host_header[:100]!r}; an administrator "
                         "can add it to AIEVAL_TRUSTED_HOSTS")
        if scope["type"] == "http" and scope["method"] not in STATE_CHANGING_METHODS:
            return None
        origin_header = headers.get("origin")
        if origin_header is not None:
            origin = parse_origin(origin_header)
            if origin is not None and (origin in self.allowed_origins or origin == self.own_origin(scope, host)):
                return None
            return 403, (f"refused a request from the web page at {origin_header[:100]!r}: only this server's own "
                         "pages (and origins an administrator lists in AIEVAL_ALLOWED_ORIGINS) may change data "
                         "or open live feeds")
        if headers.get("sec-fetch-site") == "cross-site":
            return 403, ("refused a request the browser marks as cross-site (Sec-Fetch-Site): only this server's "
                         "own pages may change data or open live feeds")
        return None

    @staticmethod
    def own_origin(scope, host: tuple[str, int | None]) -> Origin:
        """This server's origin as the browser sees it: the Host header, and the scheme of the connection. Behind a
        TLS proxy, uvicorn takes the scheme from X-Forwarded-Proto when the proxy is in FORWARDED_ALLOW_IPS."""
        scheme = PAGE_SCHEMES.get(scope.get("scheme", "http"), "http")
        name, port = host
        return Origin(scheme, name, port or DEFAULT_PORTS[scheme])


def content_security_policy(host_header: str, *, script_sources: Iterable[str] = ()) -> str:
    """The CSP of every page this server (and configs/deploy/nginx.conf, which tests/e2e/test_nginx.py compares) serves:
    scripts, styles, images, fonts and connections from this origin only; no plugins, no framing."""
    connect = ["'self'"]
    if HOST_HEADER.fullmatch(host_header):
        # 'self' covers ws:/wss: of the same host only in newer browsers (CSP level 3): name them.
        connect += [f"ws://{host_header}", f"wss://{host_header}"]
    directives = {
        "default-src": "'self'",
        "script-src": " ".join(["'self'", *script_sources]),
        # Naive UI (css-render), ECharts and Swagger UI style elements at run time, through inserted <style>
        # elements and style attributes; CSP cannot admit those without 'unsafe-inline'. Styles cannot run code.
        "style-src": "'self' 'unsafe-inline'",
        # Naive UI icons, Swagger UI's and ReDoc's CSS images are data: URLs.
        "img-src": "'self' data:",
        "font-src": "'self' data:",
        "connect-src": " ".join(connect),
        # ReDoc runs its search index in a Web Worker made from a blob: URL.
        "worker-src": "'self' blob:",
        "object-src": "'none'",
        "base-uri": "'self'",
        "form-action": "'self'",
        "frame-ancestors": "'none'",
    }
    return "; ".join(f"{name} {value}" for name, value in directives.items())


def security_headers(host_header: str) -> dict[str, str]:
    return {
        "Content-Security-Policy": content_security_policy(host_header),
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",  # for browsers without CSP frame-ancestors
        "Referrer-Policy": "no-referrer",
    }


# An X-Request-ID a proxy (Nginx's $request_id) or a client sent is kept when it is a plain token; anything else
# (too long, spaces, line breaks that could forge log lines) is replaced by a new id.
_FORWARDED_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def request_id_of(headers: Headers) -> str:
    forwarded = headers.get("x-request-id", "")
    return forwarded if _FORWARDED_REQUEST_ID.fullmatch(forwarded) else uuid.uuid4().hex


class ResponseHardening:
    """Every HTTP response gets the security headers (a route may set its own CSP: /docs does) and an X-Request-ID
    (the one the request brought, or a new one), which every log line written for the request carries
    (log_config.request_id_var). An unexpected exception becomes a 500 with a JSON body that names the request id
    and nothing of the error; the traceback goes to the log with the same id."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request_id = request_id_of(Headers(scope=scope))
        scope.setdefault("state", {})["request_id"] = request_id
        context = request_id_var.set(request_id)
        try:
            await self._harden(scope, receive, send, request_id)
        finally:
            request_id_var.reset(context)

    async def _harden(self, scope, receive, send, request_id: str) -> None:
        added = {**security_headers(Headers(scope=scope).get("host", "")), "X-Request-ID": request_id}
        response_started = False

        async def send_hardened(message):
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
                message["headers"] = list(message.get("headers", []))
                headers = MutableHeaders(raw=message["headers"])
                for name, value in added.items():
                    headers.setdefault(name, value)
            await send(message)

        try:
            await self.app(scope, receive, send_hardened)
        except Exception:
            log.exception("unexpected error in %s %s, request id %s", scope["method"], scope["path"], request_id)
            if response_started:  # too late for an error response: let the server drop the connection
                raise
            response = error_response(500, "internal error", request_id=request_id)
            await response(scope, receive, send_hardened)
