"""S3 on loopback: moto's real S3 server, behind a small proxy that can misbehave on cue.

Import ``moto_endpoint_fixture`` and ``s3_fixture`` into a test module to use them (they
register as the fixtures ``moto_endpoint`` and ``s3``). ``moto_endpoint`` starts
``moto.server.ThreadedMotoServer`` on 127.0.0.1 (a free port) once per session.
``s3`` gives each test a fresh bucket, fake credentials in the environment, and a
``FaultProxy`` in front of moto through which the code under test talks. The proxy forwards
requests byte for byte and, when told to, answers instead with what a struggling S3 sends:

    s3.proxy.fail(times=3)                 500 InternalError, for the next 3 requests
    s3.proxy.throttle(times=2, method="GET")  503 SlowDown
    s3.proxy.down = True                   every connection dropped unanswered, as a dead endpoint
    s3.proxy.cut_body(times=2, path_contains="/records/")
                                           an object's GET answered with its headers and half its
                                           body, then the connection closed (IncompleteRead)
    s3.proxy.corrupt_body(times=1, path_contains="/3.txt")
                                           an object's GET answered with its headers (ETag and
                                           length intact) and a body with one byte changed

Body faults touch object GETs only, never listings. Tests read the bucket directly from moto
(``s3.client``) so their checks never go through the faults they inject.
"""

from __future__ import annotations

import functools
import http.client
import socket
import threading
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.config import Config

FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing-key-id",
    "AWS_SECRET_ACCESS_KEY": "testing-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}
# Variables that would point boto3 somewhere other than the fake.
_UNSET = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN",
          "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "MEDBENCH_S3_ADDRESSING",
          "MEDBENCH_S3_RETRY_MODE", "MEDBENCH_S3_MAX_ATTEMPTS")

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "expect", "proxy-connection",
               "te", "trailer", "upgrade"}


def free_port() -> int:
    """A port nothing listens on (bound and released): an endpoint that is down."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Fault:
    status: int
    code: str
    message: str
    remaining: int
    method: str | None = None
    path_contains: str | None = None

    def matches(self, method: str, path: str) -> bool:
        return (self.remaining > 0 and (self.method is None or self.method == method)
                and (self.path_contains is None or self.path_contains in path))


@dataclass
class BodyFault:
    """A GET forwarded to moto whose answer reaches the client damaged."""

    kind: str  # "cut" or "corrupt"
    remaining: int
    path_contains: str | None = None

    def matches(self, method: str, path: str) -> bool:
        return (self.remaining > 0 and method == "GET" and "list-type=" not in path
                and (self.path_contains is None or self.path_contains in path))


def corrupt(data: bytes) -> bytes:
    """``data`` with its middle byte changed: same length, another MD5."""
    if not data:
        return data
    i = len(data) // 2
    return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:]


class FaultProxy:
    """An HTTP proxy in front of moto that can answer 5xx, throttle, or drop connections."""

    def __init__(self, upstream: str):
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port)
        self.down = False
        # (method, path, headers) of every forwarded request
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.injected = 0
        self._faults: list[Fault] = []
        self._body_faults: list[BodyFault] = []
        self._down_after: tuple[int, str, str] | None = None
        self._lock = threading.Lock()
        self._server = _ProxyServer(("127.0.0.1", 0), _Handler, self)
        # A short poll interval: stopping the proxy at each test's end should not take half a second.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._server.close_all()
        self._thread.join()

    def fail(self, times: int = 1, *, status: int = 500, code: str = "InternalError",
             message: str = "We encountered an internal error. Please try again.",
             method: str | None = None, path_contains: str | None = None) -> None:
        """Answer the next ``times`` matching requests with an S3 error instead of forwarding."""
        with self._lock:
            self._faults.append(Fault(status, code, message, times, method, path_contains))

    def throttle(self, times: int = 1, *, method: str | None = None,
                 path_contains: str | None = None) -> None:
        self.fail(times, status=503, code="SlowDown", message="Please reduce your request rate.",
                  method=method, path_contains=path_contains)

    def cut_body(self, times: int = 1, *, path_contains: str | None = None) -> None:
        """Answer the next ``times`` matching object GETs with half their body, then hang up."""
        with self._lock:
            self._body_faults.append(BodyFault("cut", times, path_contains))

    def corrupt_body(self, times: int = 1, *, path_contains: str | None = None) -> None:
        """Answer the next ``times`` matching object GETs with one byte of the body changed."""
        with self._lock:
            self._body_faults.append(BodyFault("corrupt", times, path_contains))

    def _take_body_fault(self, method: str, path: str) -> BodyFault | None:
        with self._lock:
            for f in self._body_faults:
                if f.matches(method, path):
                    f.remaining -= 1
                    self.injected += 1
                    return f
            return None

    def go_down_after(self, count: int, *, method: str = "PUT", path_contains: str = "") -> None:
        """Forward ``count`` more matching requests, then behave as a dead endpoint."""
        with self._lock:
            self._down_after = (self.count_unlocked(method, path_contains) + count, method, path_contains)

    def pending_faults(self) -> int:
        with self._lock:
            return sum(f.remaining for f in self._faults)

    def count(self, method: str, path_contains: str = "") -> int:
        """How many matching requests were forwarded to moto (faults not included)."""
        with self._lock:
            return self.count_unlocked(method, path_contains)

    def count_unlocked(self, method: str, path_contains: str) -> int:
        return sum(1 for m, p, _h in self.requests if m == method and path_contains in p)

    def _take_fault(self, method: str, path: str, headers: dict[str, str]) -> Fault | None:
        with self._lock:
            if self._down_after is not None:
                limit, m, contains = self._down_after
                if self.count_unlocked(m, contains) >= limit:
                    self.down, self._down_after = True, None
            if self.down:
                return None
            for f in self._faults:
                if f.matches(method, path):
                    f.remaining -= 1
                    self.injected += 1
                    return f
            self.requests.append((method, path, headers))
            return None


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, handler, proxy: FaultProxy):
        self.proxy = proxy
        self.open_sockets: set[socket.socket] = set()
        super().__init__(address, handler)

    def process_request(self, request, client_address) -> None:
        self.open_sockets.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request) -> None:
        self.open_sockets.discard(request)
        super().shutdown_request(request)

    def close_all(self) -> None:
        """Drop kept-alive client connections so no handler thread outlives the proxy."""
        for sock in list(self.open_sockets):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def verify_request(self, request, client_address) -> bool:
        # A dead endpoint: the connection is accepted and closed before a byte is read.
        return not self.proxy.down


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _ProxyServer

    def log_message(self, format, *args) -> None:  # noqa: A002 - the base class's name
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _handle(self) -> None:
        proxy = self.server.proxy
        body = self._body()
        fault = proxy._take_fault(self.command, self.path, dict(self.headers.items()))
        if proxy.down:
            self.close_connection = True
            return
        if fault is not None:
            self._send_error(fault)
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        if body or self.command in ("PUT", "POST"):
            headers["Content-Length"] = str(len(body))
        conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
        try:
            conn.request(self.command, self.path, body=body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            damage = (proxy._take_body_fault(self.command, self.path)
                      if resp.status in (200, 206) and data else None)
            self.send_response(resp.status, resp.reason)
            for k, v in resp.getheaders():
                if k.lower() in _HOP_BY_HOP or (k.lower() == "content-length" and self.command != "HEAD"):
                    continue
                self.send_header(k, v)
            if self.command != "HEAD":
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if damage is not None and damage.kind == "cut":
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True  # the rest never comes: the client sees IncompleteRead
            elif self.command != "HEAD":
                self.wfile.write(corrupt(data) if damage is not None else data)
        finally:
            conn.close()

    def _send_error(self, fault: Fault) -> None:
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{fault.code}</Code><Message>{fault.message}</Message>"
            f"<RequestId>{uuid.uuid4().hex[:16]}</RequestId></Error>"
        ).encode()
        self.send_response(fault.status)
        self.send_header("Content-Type", "application/xml")
        if self.command == "HEAD":
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle


@dataclass
class S3Fake:
    """One test's view of the fake: a fresh bucket, the proxy in front, a direct client."""

    bucket: str
    endpoint: str  # through the fault proxy: what the code under test uses
    direct_endpoint: str  # moto itself: what the test's own checks use
    proxy: FaultProxy
    client: object  # a boto3 S3 client straight to moto

    def url(self, prefix: str = "runs") -> str:
        return f"s3://{self.bucket}/{prefix}".rstrip("/")

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def read(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def env(self) -> dict[str, str]:
        """Environment for a subprocess that should talk to this fake."""
        return {**FAKE_ENV, "AWS_ENDPOINT_URL_S3": self.endpoint}


@functools.cache
def direct_client(endpoint: str):
    return boto3.session.Session(
        aws_access_key_id=FAKE_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=FAKE_ENV["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    ).client("s3", endpoint_url=endpoint, config=Config(s3={"addressing_style": "path"}))


@pytest.fixture(scope="session", name="moto_endpoint")
def moto_endpoint_fixture():
    """moto's S3 server on 127.0.0.1, one per test session, stopped at the end."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(name="s3")
def s3_fixture(moto_endpoint, monkeypatch):
    """A fresh bucket behind a fault proxy, with fake credentials in the environment."""
    for name in _UNSET:
        monkeypatch.delenv(name, raising=False)
    for name, value in FAKE_ENV.items():
        monkeypatch.setenv(name, value)
    # Keep retry back-off short but real: enough attempts to ride out the injected faults.
    monkeypatch.setenv("MEDBENCH_S3_MAX_ATTEMPTS", "6")
    client = direct_client(moto_endpoint)
    bucket = f"medbench-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    proxy = FaultProxy(moto_endpoint).start()
    try:
        yield S3Fake(bucket, proxy.endpoint, moto_endpoint, proxy, client)
    finally:
        proxy.stop()
