"""Issue 8, finding 8 (found by schemathesis with two workers): a PATCH racing a DELETE of the same model ended in
a bare 500 (SQLAlchemy's StaleDataError at flush). A race between two requests is the caller's to resolve: 409 with
a message, and the row stays deleted."""

from __future__ import annotations

import sqlite3

from sqlalchemy import event
from sqlalchemy.orm import Session


def test_a_change_racing_a_delete_is_a_409_not_a_500(client, settings):
    created = client.post("/api/v1/models", json={"name": "racer", "kind": "openai",
                                                  "base_url": "http://127.0.0.1:9/v1", "model": "m"})
    assert created.status_code == 201, created.text
    model_id = created.json()["id"]
    database = settings.data_dir / "aieval.db"

    deleted = []

    def delete_meanwhile(session, _context, _instances):
        # Between the PATCH's read and its write, another request deletes the row (a second connection commits).
        if not deleted:
            deleted.append(model_id)
            with sqlite3.connect(database) as other:
                other.execute("DELETE FROM models WHERE id = ?", (model_id,))

    event.listen(Session, "before_flush", delete_meanwhile)
    try:
        response = client.patch(f"/api/v1/models/{model_id}", json={"name": "renamed"})
    finally:
        event.remove(Session, "before_flush", delete_meanwhile)
    assert deleted
    assert response.status_code == 409, response.text
    assert "reload and try again" in response.json()["detail"]
    assert client.get(f"/api/v1/models/{model_id}").status_code == 404
