"""Signing a test's HTTP client in to a server with AIEVAL_AUTH_ENABLED, as the web UI does: the session cookie
kept by the client, the CSRF token sent with every request."""

from __future__ import annotations

import httpx


def sign_in(client: httpx.Client, username: str, password: str) -> dict:
    """POST /auth/login; the client keeps the cookie and sends X-CSRF-Token from now on. Returns the answer."""
    response = client.post("/api/v1/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    state = response.json()
    client.headers["X-CSRF-Token"] = state["csrf_token"]
    return state
