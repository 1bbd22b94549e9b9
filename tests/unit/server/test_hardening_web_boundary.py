"""Issue 8, findings 4, 11, 12 and the catch-all of 7: what a browser on another site, a foreign Host name, and an
unexpected error get from the server. Over a real socket (uvicorn on 127.0.0.1) where the server's own behaviour
matters (headers, WebSocket handshakes); TestClient for the rest."""

from __future__ import annotations

import logging
import socket
from html.parser import HTMLParser
from http.client import HTTPConnection
from urllib.parse import urlsplit

import httpx
import pytest
from threaded_server import uvicorn_in_thread
from websockets.sync.client import connect as websocket_connect

JSONL = b'{"question": "1+1?", "answer": "2"}\n{"question": "2+2?", "answer": "4"}\n'
EVIL = "http://evil.example"


@pytest.fixture
def web_dist(tmp_path):
    dist = tmp_path / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text('<!doctype html><html><head><script type="module" src="/assets/app.js"></script>'
                                     '<link rel="stylesheet" href="/assets/app.css"></head><body></body></html>')
    (dist / "assets" / "app.js").write_text("console.log('app')")
    (dist / "assets" / "app.css").write_text("body{}")
    return dist


@pytest.fixture
def live(settings, web_dist):
    """The app as production runs it: uvicorn on 127.0.0.1 with the options of start_fastapi_server.py."""
    from aieval_server.main import create_app

    settings = settings.model_copy(update={"web_dist": web_dist})
    with uvicorn_in_thread(create_app(settings), server_header=False, proxy_headers=True) as server:
        yield f"http://127.0.0.1:{server.config.port}"


@pytest.fixture
def http(live):
    with httpx.Client(base_url=live, timeout=30) as client:
        yield client


def a_model(http) -> int:
    created = http.post("/api/v1/models", json={"name": "m", "kind": "openai", "base_url": "http://127.0.0.1:9/v1",
                                                "model": "m"})
    assert created.status_code == 201, created.text
    return created.json()["id"]


def assert_refused(response, status=403):
    assert response.status_code == status, response.text
    body = response.json()
    assert body["problems"] == [] and len(body["detail"]) > 20, body  # a sentence, not a bare code


# ---- finding 4: other sites and other hosts -----------------------------------------------------------------------
def test_another_site_cannot_upload_or_test_or_change_a_model(http, live, stored_files):
    model_id = a_model(http)  # no Origin: curl and scripts pass
    assert_refused(http.post("/api/v1/datasets", files={"file": ("qa.jsonl", JSONL)}, headers={"Origin": EVIL}))
    assert stored_files() == []
    assert_refused(http.post(f"/api/v1/models/{model_id}/test", headers={"Origin": EVIL}))
    assert_refused(http.patch(f"/api/v1/models/{model_id}", json={"name": "x"}, headers={"Origin": EVIL}))
    assert_refused(http.delete(f"/api/v1/models/{model_id}", headers={"Origin": EVIL}))
    # A sandboxed frame or a file:// page sends "null"; the browser's own fetch metadata also counts.
    assert_refused(http.post(f"/api/v1/models/{model_id}/test", headers={"Origin": "null"}))
    assert_refused(http.post(f"/api/v1/models/{model_id}/test", headers={"Sec-Fetch-Site": "cross-site"}))
    # Same host name on another port is another origin.
    assert_refused(http.post(f"/api/v1/models/{model_id}/test", headers={"Origin": "http://127.0.0.1:1"}))
    assert http.get(f"/api/v1/models/{model_id}").json()["name"] == "m"

    # The server's own pages (same origin) may.
    own = {"Origin": live, "Sec-Fetch-Site": "same-origin"}
    uploaded = http.post("/api/v1/datasets", files={"file": ("qa.jsonl", JSONL)}, headers=own)
    assert uploaded.status_code == 201, uploaded.text
    tested = http.post(f"/api/v1/models/{model_id}/test", headers=own)
    assert tested.status_code == 200, tested.text
    # Reading is not refused: a cross-site page cannot read the answer anyway (no CORS headers).
    listed = http.get("/api/v1/models", headers={"Origin": EVIL})
    assert listed.status_code == 200 and "access-control-allow-origin" not in listed.headers


def test_a_foreign_host_name_is_refused_on_the_api_and_the_ui(http):
    for path in ("/api/v1/health", "/", "/evaluations/3", "/docs"):
        assert_refused(http.get(path, headers={"Host": "evil.example"}), 400)
        assert_refused(http.get(path, headers={"Host": "evil.example:8000"}), 400)
    assert_refused(http.get("/api/v1/health", headers={"Host": "127.0.0.1@evil.example"}), 400)
    for host in ("127.0.0.1", "localhost:8000", "LOCALHOST", "[::1]:1234"):  # loopback names, any port
        assert http.get("/api/v1/health", headers={"Host": host}).status_code == 200, host


def handshake_status(live: str, path: str, headers: dict[str, str]) -> int:
    """The status line of a WebSocket handshake sent byte by byte (a client library would set Host itself)."""
    port = int(live.rsplit(":", 1)[1])
    headers = {"Host": f"127.0.0.1:{port}", "Upgrade": "websocket", "Connection": "Upgrade",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13", **headers}
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall((f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
                            + "\r\n").encode())
        return int(connection.recv(1024).split(b" ", 2)[1])


def test_a_websocket_from_another_site_or_host_is_refused_at_the_handshake(live):
    for headers in ({"Origin": EVIL}, {"Origin": "null"}, {"Origin": "http://127.0.0.1:1"},
                    {"Host": "evil.example"}, {"Host": "evil.example", "Origin": "http://evil.example"}):
        assert handshake_status(live, "/api/v1/evaluations/ws", headers) == 403, headers
    assert handshake_status(live, "/api/v1/evaluations/ws", {"Origin": live}) == 101
    ws = live.replace("http://", "ws://") + "/api/v1/evaluations/ws"
    with websocket_connect(ws, origin=live, open_timeout=10):  # the server's own page
        pass
    with websocket_connect(ws, open_timeout=10):  # no Origin: not a browser
        pass


def test_allowed_origins_may_call_and_get_cors_headers(settings):
    from fastapi.testclient import TestClient

    from aieval_server.main import create_app

    tool = "https://tools.example.com"
    app = create_app(settings.model_copy(update={"allowed_origins": [tool]}))
    with TestClient(app) as client:
        created = client.post("/api/v1/models", json={"name": "m", "kind": "openai", "base_url": "http://127.0.0.1:9/v1",
                                                      "model": "m"}, headers={"Origin": tool, "Sec-Fetch-Site": "cross-site"})
        assert created.status_code == 201, created.text
        assert created.headers["access-control-allow-origin"] == tool
        assert_refused(client.post("/api/v1/models", json={}, headers={"Origin": "https://other.example.com"}))


def test_settings_explain_a_bad_host_or_origin():
    from pydantic import ValidationError

    from aieval_server.config import Settings

    assert Settings(trusted_hosts=["[::1]", "Example.COM", "*.example.org"]).trusted_hosts == \
        ["::1", "example.com", "*.example.org"]
    assert Settings(allowed_origins=["https://tools.example.com"]).allowed_origins == ["https://tools.example.com:443"]
    with pytest.raises(ValidationError, match="without scheme or port"):
        Settings(trusted_hosts=["example.com:8000"])
    with pytest.raises(ValidationError, match="is not a web origin"):
        Settings(allowed_origins=["*"])


def test_the_default_trusted_hosts_are_the_loopback_names(monkeypatch):
    from aieval_server.config import Settings

    monkeypatch.delenv("AIEVAL_TRUSTED_HOSTS", raising=False)
    assert Settings().trusted_hosts == ["127.0.0.1", "localhost", "::1"]
    assert Settings().allowed_origins == []


# ---- finding 11: security headers, no banner, JSON 404 under /api --------------------------------------------------
def assert_hardened(response):
    headers = response.headers
    policy = dict(part.strip().split(" ", 1) for part in headers["content-security-policy"].split(";"))
    assert policy["default-src"] == "'self'" and policy["frame-ancestors"] == "'none'"
    assert policy["object-src"] == "'none'" and policy["base-uri"] == "'self'"
    assert "'unsafe-inline'" not in policy["script-src"] and "'unsafe-eval'" not in policy["script-src"]
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "no-referrer"
    assert len(headers["x-request-id"]) == 32
    assert "server" not in headers, headers["server"]
    return policy


def oversized_upload(live: str) -> httpx.Response:
    """A declared size over the limit, refused (413) before any body is sent."""
    connection = HTTPConnection(urlsplit(live).netloc, timeout=10)
    connection.putrequest("POST", "/api/v1/datasets")
    connection.putheader("Content-Length", str(10**12))
    connection.endheaders()
    answer = connection.getresponse()
    response = httpx.Response(answer.status, headers=answer.getheaders(), content=answer.read())
    connection.close()
    return response


def test_every_response_has_the_security_headers_and_no_server_banner(http, live):
    responses = [http.get("/api/v1/health"), http.get("/"), http.get("/evaluations/3"), http.get("/assets/app.js"),
                 http.get("/assets/missing.js"), http.get("/api/v1/nothing"), http.get("/api/v1/models/0"),
                 http.get("/openapi.json"), http.get("/docs"), http.get("/redoc"), http.get("/docs/assets/swagger-ui.css"),
                 http.get("/api/v1/health", headers={"Host": "evil.example"}),
                 http.post("/api/v1/models", json={}, headers={"Origin": EVIL}),
                 oversized_upload(live)]
    assert [r.status_code for r in responses] == [200, 200, 200, 200, 404, 404, 422, 200, 200, 200, 200, 400, 403, 413]
    for response in responses:
        policy = assert_hardened(response)
        assert policy["connect-src"] == f"'self' {live.replace('http', 'ws')} {live.replace('http', 'wss')}" \
            or response.status_code == 400
    assert len({r.headers["x-request-id"] for r in responses}) == len(responses)


@pytest.mark.parametrize("path", ["/api/v1/unknown", "/api", "/api/v2/models", "/api/v1/models/1/nothing"])
def test_unknown_api_paths_answer_json_404_in_the_apps_error_shape(http, path):
    response = http.get(path)
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found", "problems": []}


# ---- finding 12: the docs pages load nothing from outside ---------------------------------------------------------
class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


def test_docs_redoc_and_the_ui_reference_only_their_own_origin(http):
    checked = set()
    for page in ("/docs", "/redoc", "/"):
        response = http.get(page)
        assert response.status_code == 200
        links = Links()
        links.feed(response.text)
        assert links.urls, page
        for url in links.urls:
            parts = urlsplit(url)
            assert not parts.scheme and not parts.netloc, f"{page} loads {url} from another host"
            checked.add(parts.path)
    for path in checked:
        assert http.get(path).status_code == 200, path
    assert {"/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css", "/docs/assets/redoc.standalone.js",
            "/docs/assets/favicon.png"} <= checked
    assert "fonts.googleapis" not in http.get("/redoc").text


def test_only_the_swagger_page_admits_its_one_inline_script_by_hash(http):
    import base64
    import hashlib
    import re

    docs = http.get("/docs")
    inline = re.findall(r"<script>(.*?)</script>", docs.text, re.S)
    assert len(inline) == 1
    digest = base64.b64encode(hashlib.sha256(inline[0].encode()).digest()).decode()
    assert assert_hardened(docs)["script-src"] == f"'self' 'sha256-{digest}'"
    assert '"validatorUrl": null' in docs.text  # no badge image from validator.swagger.io
    for other in ("/", "/redoc", "/api/v1/health"):
        assert assert_hardened(http.get(other))["script-src"] == "'self'"


# ---- finding 7 (part): the catch-all --------------------------------------------------------------------------------
def test_an_unexpected_error_is_a_json_500_with_a_request_id_and_no_internals(settings, caplog):
    from fastapi.testclient import TestClient

    from aieval_server.main import create_app

    app = create_app(settings)

    @app.get("/api/v1/explode")
    def explode():
        raise RuntimeError("password=hunter2 in /secret/path")

    with TestClient(app) as client, caplog.at_level(logging.ERROR):
        response = client.get("/api/v1/explode")
    assert response.status_code == 500
    request_id = response.headers["x-request-id"]
    assert response.json() == {"detail": "internal error", "problems": [], "request_id": request_id}
    assert "hunter2" not in response.text and "RuntimeError" not in response.text
    assert_hardened(response)
    logged = [r for r in caplog.records if request_id in r.getMessage()]
    assert logged and logged[0].exc_info and "hunter2" in str(logged[0].exc_info[1])
