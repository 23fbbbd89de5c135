"""The search client's transport honours proxies and CA bundles the way boto3 does.

* ``HTTP_PROXY`` sends every request through a counting forward proxy on
  loopback (a real proxy: it forwards to osmem-server and relays the answer);
  ``NO_PROXY`` naming the host bypasses it. boto3 reads the same variables.
* The CA bundle, in boto3's order: ``search.ca_certs`` (the configuration) over
  ``AWS_CA_BUNDLE`` over ``REQUESTS_CA_BUNDLE`` over the default bundle, checked
  against a TLS server on loopback with a certificate made here.
"""

from __future__ import annotations

import datetime
import http.client
import http.server
import ipaddress
import socket
import ssl
import threading
import warnings
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from worker.config import SearchSection
from worker.errors import RetryableError
from worker.pipeline import Pipeline
from worker.records import RawRecord
from worker.shapes import build
from worker.sinks.search import SearchSink
from worker.sinks.search.client import connect, tls_verify
from worker.testing import MemoryDeadLetters

PROXY_VARS = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY")
CA_VARS = ("AWS_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


@pytest.fixture
def clean_env(monkeypatch):
    for var in (*PROXY_VARS, *CA_VARS):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


# -- a counting forward proxy ------------------------------------------------------------------


class _Proxy(http.server.BaseHTTPRequestHandler):
    """Forwards absolute-URI requests (``POST http://host:port/path``) and counts them."""

    count: list[int]

    def _forward(self) -> None:
        target = urlsplit(self.path)
        assert target.scheme == "http" and target.hostname == "127.0.0.1", self.path  # loopback only
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("proxy-connection", "connection")}
        conn = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
        path = target.path + (f"?{target.query}" if target.query else "")
        conn.request(self.command, path, body=body or None, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        self.count.append(1)
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        conn.close()

    do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _forward

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def proxy() -> Iterator[tuple[str, list[int]]]:
    count: list[int] = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), type("P", (_Proxy,), {"count": count}))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", count
    server.shutdown()
    server.server_close()


def _write_two(url: str, index: str) -> SearchSink:
    section = SearchSection(url=url, index=index)
    sink = SearchSink(connect(section, "us-east-1"), section)
    records = [
        build("INSERT", {"pk": k}, new={"pk": k, "n": Decimal(1)}, sequence=10**21 + i) for i, k in enumerate("ab")
    ]
    Pipeline([sink], MemoryDeadLetters()).process([RawRecord(r, f"t:{i}") for i, r in enumerate(records)])
    return sink


def test_requests_go_through_the_proxy_named_by_http_proxy(clean_env, proxy, osmem_url):
    proxy_url, count = proxy
    clean_env.setenv("HTTP_PROXY", proxy_url)
    sink = _write_two(osmem_url, "via-proxy")
    assert sorted(sink.report()["via-proxy"]) == ["a", "b"]
    assert len(count) == sum(sink.client.calls.values()) > 0  # every request, none around it
    sink.close()


def test_no_proxy_bypasses_the_proxy(clean_env, proxy, osmem_url):
    proxy_url, count = proxy
    clean_env.setenv("HTTP_PROXY", proxy_url)
    clean_env.setenv("NO_PROXY", "127.0.0.1")
    sink = _write_two(osmem_url, "no-proxy")
    assert sorted(sink.report()["no-proxy"]) == ["a", "b"]
    assert count == []
    sink.close()


# -- CA bundles --------------------------------------------------------------------------------


def _self_signed(tmp: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / f"{name}.pem", tmp / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def tls_server(tmp_path) -> Iterator[tuple[str, Path, Path]]:
    """An HTTPS server on loopback; its certificate, and an unrelated one."""
    cert, key = _self_signed(tmp_path, "server")
    other, _ = _self_signed(tmp_path, "other")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"https://127.0.0.1:{server.server_address[1]}", cert, other
    server.shutdown()
    server.server_close()


def _get(url: str, **settings: object) -> None:
    client = connect(SearchSection(url=url, timeout_seconds=10, **settings), "us-east-1")  # type: ignore[arg-type]
    try:
        client.request("GET", "/")
    finally:
        client.close()


@pytest.mark.parametrize(
    ("settings", "env", "trusted"),
    [
        ({}, {}, False),  # the default bundle does not know a self-signed certificate
        ({}, {"REQUESTS_CA_BUNDLE": "server"}, True),
        ({}, {"AWS_CA_BUNDLE": "server", "REQUESTS_CA_BUNDLE": "other"}, True),  # AWS_CA_BUNDLE first
        ({}, {"AWS_CA_BUNDLE": "other", "REQUESTS_CA_BUNDLE": "server"}, False),
        ({"ca_certs": "server"}, {"AWS_CA_BUNDLE": "other", "REQUESTS_CA_BUNDLE": "other"}, True),  # config wins
        ({"ca_certs": "other"}, {"REQUESTS_CA_BUNDLE": "server"}, False),
        ({"verify_tls": False}, {"REQUESTS_CA_BUNDLE": "other"}, True),
    ],
)
def test_the_ca_bundle_is_chosen_in_boto3s_order(clean_env, tls_server, settings, env, trusted):
    url, server_cert, other_cert = tls_server
    files = {"server": str(server_cert), "other": str(other_cert)}
    for var, which in env.items():
        clean_env.setenv(var, files[which])
    resolved = {k: files.get(v, v) if isinstance(v, str) else v for k, v in settings.items()}
    if trusted:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _get(url, **resolved)
        assert not caught  # verify_tls = false was asked for: no warning on every request
    else:
        with pytest.raises(RetryableError, match="SSL"):
            _get(url, **resolved)


def test_tls_verify_order_without_a_server():
    env = {"AWS_CA_BUNDLE": "/aws.pem", "REQUESTS_CA_BUNDLE": "/req.pem"}
    assert tls_verify(SearchSection(url="https://h", ca_certs="/cfg.pem"), env) == "/cfg.pem"
    assert tls_verify(SearchSection(url="https://h", verify_tls=False), env) is False
    assert tls_verify(SearchSection(url="https://h"), env) == "/aws.pem"
    assert tls_verify(SearchSection(url="https://h"), {"REQUESTS_CA_BUNDLE": "/req.pem"}) == "/req.pem"
    assert tls_verify(SearchSection(url="https://h"), {}) is True


# -- sockets -----------------------------------------------------------------------------------


def test_connections_send_without_nagles_delay(clean_env, osmem_url):
    """The connection writes a request's headers and body separately; with Nagle's algorithm on,
    the body waits for the server's delayed ACK (40 ms a request). Its sockets must set TCP_NODELAY,
    as botocore's own clients do. (Reads the pool's sockets through botocore's and urllib3's
    internals: a timing assertion would be flaky.)"""
    client = connect(SearchSection(url=osmem_url), "us-east-1")
    try:
        client.request("PUT", "/nodelay", b"{}", expect=(200, 201, 400))
        pool = client.connection.http._manager.connection_from_url(osmem_url)
        socks = [conn.sock for conn in list(pool.pool.queue) if conn is not None and conn.sock is not None]
        assert socks, "the request's connection went back to the pool"
        assert all(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for s in socks)
    finally:
        client.close()
