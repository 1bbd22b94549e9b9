"""One HTTPS context per process for every model client (netpolicy.default_ssl_context): made once, still following
SSL_CERT_FILE, still verifying; and connections to a literal address are checked without a thread."""

from __future__ import annotations

import asyncio
import datetime
import http.server
import ipaddress
import ssl
import threading

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from aieval_engine.netpolicy import (
    GuardedAsyncTransport,
    GuardedTransport,
    OutboundPolicy,
    OutboundPolicyError,
    default_ssl_context,
    guarded_client,
)


@pytest.fixture
def https_server(tmp_path):
    """A loopback HTTPS server whose certificate (for 127.0.0.1) is signed by nobody a system trusts; yields
    (url, the certificate's PEM file to trust it by)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "aieval test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_port}/", cert_file
    server.shutdown()
    server.server_close()


def test_every_transport_shares_the_one_context_of_the_process(monkeypatch):
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    context = default_ssl_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    policy = OutboundPolicy()
    assert GuardedTransport(policy)._pool._ssl_context is context
    assert GuardedAsyncTransport(policy)._pool._ssl_context is context
    assert default_ssl_context() is context


def test_the_shared_context_verifies_and_follows_ssl_cert_file(monkeypatch, https_server):
    url, cert_file = https_server
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    with guarded_client(OutboundPolicy()) as client, pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY"):
        client.get(url)  # an untrusted certificate is refused, as by httpx's own context

    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))  # a run told to trust this certificate ...
    trusting = default_ssl_context()
    with guarded_client(OutboundPolicy()) as client:
        assert client.get(url).text == "ok"  # ... gets a context that does

    async def fetch() -> str:
        async with httpx.AsyncClient(transport=GuardedAsyncTransport(OutboundPolicy()), trust_env=False) as client:
            return (await client.get(url)).text

    assert asyncio.run(fetch()) == "ok"
    assert default_ssl_context() is trusting  # made once for that value
    monkeypatch.delenv("SSL_CERT_FILE")
    assert default_ssl_context() is not trusting


def test_a_literal_address_is_judged_without_a_thread(monkeypatch):
    import anyio.to_thread

    def no_thread(*args, **kwargs):
        raise AssertionError("a literal address needs no lookup in a thread")

    monkeypatch.setattr(anyio.to_thread, "run_sync", no_thread)

    async def fetch(url: str) -> None:
        async with httpx.AsyncClient(transport=GuardedAsyncTransport(OutboundPolicy()), trust_env=False) as client:
            await client.get(url)

    with pytest.raises(OutboundPolicyError, match="169.254.169.254 is a link-local"):
        asyncio.run(fetch("http://169.254.169.254/latest/meta-data/"))
    with pytest.raises(AssertionError, match="needs no lookup"):  # a name still is looked up in a thread
        asyncio.run(fetch("http://model.test/v1"))
