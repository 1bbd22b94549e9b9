"""The embedded server serves the built UI with a history-mode fallback: client routes (reloads, pasted deep links)
get index.html; missing assets, API paths and the docs keep their own answers."""

from __future__ import annotations

import pytest

INDEX = '<!doctype html><html><body><div id="app"></div><script type="module" src="/assets/app.js"></script></body></html>'


@pytest.fixture
def settings(settings, tmp_path):
    web_dist = tmp_path / "web-dist"
    (web_dist / "assets").mkdir(parents=True)
    (web_dist / "index.html").write_text(INDEX)
    (web_dist / "assets" / "app.js").write_text("console.log('app')\n")
    (web_dist / "favicon.svg").write_text("<svg/>")
    return settings.model_copy(update={"web_dist": web_dist})


def _is_index(response) -> bool:
    return (response.status_code == 200 and response.headers["content-type"].startswith("text/html")
            and response.text == INDEX)


def test_the_root_and_index_html_are_the_app_and_always_revalidated(client):
    for path in ("/", "/index.html"):
        response = client.get(path)
        assert _is_index(response), path
        assert response.headers["cache-control"] == "no-cache"


@pytest.mark.parametrize("path", ["/evaluations/12", "/evaluations/12/", "/evaluations/new", "/models", "/datasets",
                                  "/leaderboard", "/no/such/page"])
def test_a_deep_link_or_reload_of_a_client_route_gets_index_html(client, path):
    response = client.get(path)
    assert _is_index(response)
    assert response.headers["cache-control"] == "no-cache"


def test_head_of_a_deep_link_also_answers_with_the_app(client):
    response = client.head("/evaluations/12")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")


def test_existing_files_are_served_as_they_are(client):
    script = client.get("/assets/app.js")
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert script.text == "console.log('app')\n"
    assert script.headers["cache-control"] == "public, max-age=31536000, immutable"
    icon = client.get("/favicon.svg")
    assert icon.status_code == 200 and icon.text == "<svg/>"
    assert "immutable" not in icon.headers.get("cache-control", "")


def test_a_revalidated_asset_keeps_its_cache_header(client):
    etag = client.get("/assets/app.js").headers["etag"]
    again = client.get("/assets/app.js", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.headers["cache-control"] == "public, max-age=31536000, immutable"


@pytest.mark.parametrize("path", ["/assets/missing.js", "/assets/missing", "/assets", "/missing.js", "/favicon.ico",
                                  "/evaluations/12/app.js"])
def test_a_missing_file_is_still_404_not_the_app(client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert response.text != INDEX


@pytest.mark.parametrize("path", ["/api/v1/unknown", "/api/v1/evaluations/12/nothing", "/api", "/api/"])
def test_unknown_api_paths_are_the_apis_json_404(client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"detail": "Not Found", "problems": []}  # the app's error shape


def test_the_api_and_its_docs_still_answer(client):
    assert client.get("/api/v1/health").status_code == 200
    assert client.get("/openapi.json").json()["info"]
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    assert client.get("/docs/nothing").status_code == 404
    assert client.get("/redoc").status_code == 200


def test_other_methods_on_a_client_route_are_not_answered_with_the_app(client):
    assert client.post("/evaluations/12").status_code == 405


def test_without_a_built_ui_there_is_no_fallback(tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from aieval_server.config import Settings
    from aieval_server.main import create_app

    monkeypatch.setenv("AIEVAL_DATA_DIR", str(tmp_path / "data"))
    settings = Settings(data_dir=tmp_path / "data", register_demo=False, web_dist=tmp_path / "no-web")
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        assert client.get("/evaluations/12").status_code == 404
