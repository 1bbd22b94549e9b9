def test_large_responses_are_gzipped_for_clients_that_accept_it(client):
    compressed = client.get("/openapi.json", headers={"Accept-Encoding": "gzip"})
    assert compressed.status_code == 200
    assert compressed.headers["content-encoding"] == "gzip"
    assert compressed.json()["info"]  # still the same document once decoded
    plain = client.get("/openapi.json", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
