"""TLS of the contract's caller against a real local HTTPS server that asks for a client certificate
(keys made by openssl for each run): a trusted CA and a client certificate succeed; an unknown
server certificate and a missing client certificate stop the job (waiting cannot heal either)."""
from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from transforms.contract.http import HttpJsonCaller
from transforms.contract.loader import parse_contract
from transforms.control.signals import AttemptKind


def _openssl(cwd: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=cwd)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, both signed by the CA."""
    d = tmp_path_factory.mktemp("pki")
    _openssl(d, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
             "-days", "2", "-subj", "/CN=test-ca")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name in ("server", "client"):
        _openssl(d, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={name}")
        _openssl(d, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "2", *(["-extfile", "san.ext"] if name == "server" else []))
    return d


class _Answer(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        items = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        data = json.dumps({"results": [{"id": i["id"], "ok": True} for i in items]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


class _TlsServer(ThreadingHTTPServer):
    """Shakes hands on each connection itself, and closes one whose handshake failed only once the
    client has stopped sending. In TLS 1.3 a client sends its request before the server has checked
    its certificate: closed with that request unread, the connection is reset, and the client may
    see the reset before the server's alert (12 of 20 attempts here), a connection error the job's
    start-up probe retries. This server lets the alert arrive, so the test sees what it says."""

    def __init__(self, ctx: ssl.SSLContext) -> None:
        super().__init__(("127.0.0.1", 0), _Answer)
        self._ctx = ctx

    def get_request(self) -> tuple[ssl.SSLSocket, object]:
        sock, address = self.socket.accept()
        return self._ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address

    def finish_request(self, request, client_address) -> None:
        try:
            request.do_handshake()
        except (ssl.SSLError, OSError):   # the alert is sent; read what the client still sends, then close
            with contextlib.suppress(OSError):
                request.shutdown(socket.SHUT_WR)
                request.settimeout(2.0)
                while request.recv(65536):
                    pass
            return
        super().finish_request(request, client_address)


@pytest.fixture(scope="module")
def https_url(pki: Path) -> Iterator[str]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki / "ca.pem"))
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(pki / "server.pem", pki / "server.key")
    server = _TlsServer(ctx)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"https://127.0.0.1:{server.server_address[1]}/check"
    server.shutdown()


def attempt(url: str, tls: dict | None):
    contract = parse_contract({
        "event": {"id": "id", "fields": {"id": {"type": "string"}}},
        "service": {"url": url, **({"tls": tls} if tls is not None else {})},
        "response": {"match": "id", "id": "id", "fields": {"ok": {"type": "boolean"}}},
    })
    caller = HttpJsonCaller(contract)

    async def once():
        await caller.open()
        try:
            return await caller.call([contract.schema.event({"id": "e-1"})])
        finally:
            await caller.close()
    return asyncio.run(once())


def test_a_trusted_ca_and_a_client_certificate_succeed(pki: Path, https_url: str) -> None:
    result = attempt(https_url, {"ca_file": str(pki / "ca.pem"), "cert_file": str(pki / "client.pem"),
                                 "key_file": str(pki / "client.key")})
    assert result.kind is AttemptKind.SUCCESS and result.value == [(True,)]


def test_a_certificate_no_trusted_ca_signed_stops_the_job(https_url: str) -> None:
    result = attempt(https_url, None)                       # the system's CAs do not know the test CA
    assert (result.kind, result.reason) == (AttemptKind.STOP, "tls_rejected")
    assert "certificate" in result.detail and "\n" not in result.detail


def test_a_server_that_wants_a_client_certificate_and_gets_none_stops_the_job(pki: Path, https_url: str) -> None:
    result = attempt(https_url, {"ca_file": str(pki / "ca.pem")})
    assert result.kind is AttemptKind.STOP, result
    assert result.reason in ("tls_failed", "tls_rejected") and "\n" not in result.detail
