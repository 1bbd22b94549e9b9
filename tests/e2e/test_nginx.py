"""configs/deploy/nginx.conf, the production front door (installed by scripts/deploy.sh), in front of the real server: static files (gzip, caching),
/api proxying and the WebSocket upgrade. Needs Debian's nginx (`apt-get install -y nginx-light`)."""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from harness import REPO, WEB_DIST, free_port
from playwright.sync_api import expect

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(not Path(NGINX).exists(), reason="nginx not installed (apt-get install -y nginx-light)")]


@pytest.fixture
def nginx_url(server, tmp_path):
    port = free_port(18500, 18999)
    # The site as scripts/deploy.sh installs it on a host, moved to a test port.
    rendered = tmp_path / "rendered.conf"
    subprocess.run(["bash", str(REPO / "scripts" / "deploy.sh"), "--steps", "nginx", "--no-nginx-reload",
                    "--nginx-site", str(rendered), "--api-port", server.url.rsplit(":", 1)[1], "--max-upload", "60m"],
                   check=True, capture_output=True)
    site = rendered.read_text().replace("listen 80;", f"listen 127.0.0.1:{port};")
    assert "${" not in site and f"root {WEB_DIST};" in site, "every template variable is rendered"
    (tmp_path / "site.conf").write_text(site)
    temp_paths = " ".join(f"{kind}_temp_path {tmp_path / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (tmp_path / "nginx.conf").write_text(f"""
daemon off; worker_processes 1; pid {tmp_path}/nginx.pid; error_log {tmp_path}/error.log;
events {{ worker_connections 64; }}
http {{ include /etc/nginx/mime.types; access_log off; {temp_paths} include {tmp_path}/site.conf; }}
""")
    process = subprocess.Popen([NGINX, "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path)])
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                urllib.request.urlopen(url + "/healthz", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise AssertionError((tmp_path / "error.log").read_text() if (tmp_path / "error.log").exists() else "nginx did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_nginx_serves_the_ui_proxies_the_api_and_upgrades_websockets(nginx_url, page):
    # The largest script: nginx compresses only bodies of gzip_min_length (1 KiB) or more, and some chunks are smaller.
    asset = max((WEB_DIST / "assets").glob("*.js"), key=lambda p: p.stat().st_size).name
    request = urllib.request.Request(f"{nginx_url}/assets/{asset}", headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(request) as response:
        assert response.headers["Content-Encoding"] == "gzip"
        assert "immutable" in response.headers["Cache-Control"]
    # History-mode deep links (a reload, a pasted or bookmarked URL) get index.html, always revalidated.
    index = (WEB_DIST / "index.html").read_bytes()
    for path in ("/evaluations/1", "/evaluations/new", "/models"):
        with urllib.request.urlopen(nginx_url + path) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/html")
            assert response.headers["Cache-Control"] == "no-cache"
            assert response.read() == index, path
    with pytest.raises(urllib.error.HTTPError) as missing:  # a missing asset is not the app
        urllib.request.urlopen(nginx_url + "/assets/missing.js")
    assert missing.value.code == 404
    with urllib.request.urlopen(nginx_url + "/api/v1/health") as response:
        assert response.status == 200

    page.goto(nginx_url + "/evaluations")
    expect(page.locator("h1")).to_have_text("Evaluations")
    expect(page.locator("[data-live-mode]").first).to_have_attribute("data-live-mode", "websocket")
    page.reload()
    expect(page.locator("h1")).to_have_text("Evaluations")
    # Two levels deep: the scripts load from /assets/, not relative to /evaluations/, and the page renders.
    page.goto(nginx_url + "/evaluations/987654")
    expect(page.locator("[role=alert]")).to_be_visible()
    page.goto(nginx_url + "/models")
    page.reload()
    expect(page.locator("h1")).to_have_text("Models")


def test_nginx_keeps_the_host_port_and_gives_its_files_the_servers_security_headers(nginx_url, server):
    """The API compares Origin with Host: nginx must pass the port on, or every POST from the UI looks cross-site;
    and the files nginx serves itself carry the same headers as the server's (aieval_server/security.py)."""
    import json

    own = {"Origin": nginx_url, "Content-Type": "application/json"}
    body = json.dumps({"name": "through nginx", "kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"})
    request = urllib.request.Request(f"{nginx_url}/api/v1/models", data=body.encode(), headers=own, method="POST")
    with urllib.request.urlopen(request) as response:
        assert response.status == 201
    request = urllib.request.Request(f"{nginx_url}/api/v1/models", data=body.encode(), method="POST",
                                     headers={**own, "Origin": "http://evil.example"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request)
    assert refused.value.code == 403

    names = ("Content-Security-Policy", "X-Content-Type-Options", "X-Frame-Options", "Referrer-Policy")
    host = nginx_url.removeprefix("http://")
    for path in ("/evaluations/1", "/"):
        with urllib.request.urlopen(nginx_url + path) as from_nginx:
            # The embedded server serves the same page; asked with the same Host, its headers must be the same.
            direct = urllib.request.Request(server.url + path, headers={"Host": host})
            with urllib.request.urlopen(direct) as from_server:
                assert {n: from_nginx.headers[n] for n in names} == {n: from_server.headers[n] for n in names}
    # The largest script: nginx compresses only bodies of gzip_min_length (1 KiB) or more, and some chunks are smaller.
    asset = max((WEB_DIST / "assets").glob("*.js"), key=lambda p: p.stat().st_size).name
    with urllib.request.urlopen(f"{nginx_url}/assets/{asset}") as response:
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
        assert "immutable" in response.headers["Cache-Control"]
    with urllib.request.urlopen(f"{nginx_url}/docs") as docs:  # proxied: the server's own CSP (with the hash)
        assert "'sha256-" in docs.headers["Content-Security-Policy"]
        assert docs.headers.get_all("Content-Security-Policy") == [docs.headers["Content-Security-Policy"]]
    with urllib.request.urlopen(f"{nginx_url}/docs/assets/swagger-ui.css") as css:
        assert css.status == 200
    with pytest.raises(urllib.error.HTTPError) as bare_api:  # the API's JSON 404, not the UI
        urllib.request.urlopen(f"{nginx_url}/api")
    assert bare_api.value.code == 404 and bare_api.value.headers["Content-Type"] == "application/json"
