"""A loopback server speaking OpenAI's chat-completions wire format, with injectable faults.

Real HTTP on 127.0.0.1, driven by the real ``openai`` SDK through ``base_url``. Each request
is answered by a scripted :class:`Fault` when one applies, else by a normal completion whose
text is ``"Answer to: <the user message>"`` (so a test can check each answer landed on its
own question). ``LoopbackServer`` is shared with the Gemini fake.

    with FakeOpenAI(key="sk-test") as server:
        server.on("aspirin", Fault.status(500), Fault.rate_limit(retry_after=1))
        server.enqueue(Fault.hang(5))        # whichever request comes next
        server.every(6, Fault.rate_limit(retry_after=1))   # requests 6, 12, 18... (arrival order)
        server.limit_in_flight(4, Fault.rate_limit(retry_after=1))  # a real concurrency limit
        ...  # base_url=server.url

A hostile server is scripted the same way: ``Fault.raw`` sends any bytes with any headers,
``Fault.patch`` changes fields of the normal answer (``content`` a number, ``usage`` negative,
``model`` the caller's key), ``gzip=True`` sends either gzip-encoded, and ``Fault.redirect``
sends the client elsewhere. ``key=None`` makes a server that takes any request (the other
origin a redirect points at); ``Seen.headers`` says what each request carried.
"""

from __future__ import annotations

import base64
import gzip as gzip_module
import json
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from tests.fakes.loopback import serve, shut

#: In a ``Fault.patch``: remove this key from the answer.
DROP = object()


def merged(body: Any, changes: Any) -> Any:
    """``body`` with ``changes`` laid over it: dicts key by key, lists item by item, anything
    else replaced; ``DROP`` removes a key."""
    if isinstance(body, dict) and isinstance(changes, dict):
        out = dict(body)
        for k, v in changes.items():
            if v is DROP:
                out.pop(k, None)
            else:
                out[k] = merged(body.get(k), v)
        return out
    if isinstance(body, list) and isinstance(changes, list):
        head = [merged(body[i] if i < len(body) else None, c) for i, c in enumerate(changes)]
        return head + body[len(changes):]
    return changes


def wire_bytes(body: Any) -> bytes:
    """What goes on the wire: bytes as given, text as UTF-8, anything else as JSON (where a lone
    surrogate travels as the escape ``\\ud800``, as a real server's encoder writes it)."""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8")
    return json.dumps(body).encode("ascii")


@dataclass
class Fault:
    """One scripted misbehaviour, consumed by the request it answers."""

    kind: str  # "status" | "hang" | "malformed" | "empty_length" | "quota" | "raw" | "patch" | "redirect"
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    gzip: bool = False

    @classmethod
    def raw(cls, body: Any, status: int = 200, *, gzip: bool = False, **headers: str) -> Fault:
        """Exactly this body (bytes, text, or JSON) and these headers; ``gzip`` encodes it."""
        return cls("raw", status=status, body=body, headers=dict(headers), gzip=gzip)

    @classmethod
    def patch(cls, changes: dict, *, gzip: bool = False) -> Fault:
        """The normal answer with ``changes`` merged into its JSON (see :func:`merged`)."""
        return cls("patch", body=changes, gzip=gzip)

    @classmethod
    def redirect(cls, location: str, status: int = 307) -> Fault:
        """Send the client to ``location`` (a 307 keeps the method and the body)."""
        return cls("redirect", status=status, headers={"Location": location})

    @classmethod
    def status_code(cls, code: int, body: Any = None, **headers: str) -> Fault:
        return cls("status", status=code, body=body, headers=dict(headers))

    @classmethod
    def server_error(cls, code: int = 500) -> Fault:
        return cls("status", status=code)

    @classmethod
    def rate_limit(cls, retry_after: float | None = None, retry_after_ms: int | None = None) -> Fault:
        headers = {}
        if retry_after is not None:
            headers["Retry-After"] = f"{retry_after:g}"
        if retry_after_ms is not None:
            headers["retry-after-ms"] = str(retry_after_ms)
        return cls("status", status=429, headers=headers)

    @classmethod
    def hang(cls, seconds: float = 30.0) -> Fault:
        """Accept the request and say nothing for ``seconds`` (the client should time out)."""
        return cls("hang", seconds=seconds)

    @classmethod
    def malformed(cls) -> Fault:
        """HTTP 200 whose body is not valid JSON."""
        return cls("malformed")

    @classmethod
    def quota(cls) -> Fault:
        """The provider's 'daily quota exhausted' 429."""
        return cls("quota", status=429)

    @classmethod
    def empty_length(cls) -> Fault:
        """An empty answer cut off by the token limit (all of it spent thinking)."""
        return cls("empty_length")


@dataclass
class Seen:
    """A request as the server received it; ``headers`` as sent, credentials included, so a
    test can check where a key went."""

    path: str
    body: Any
    at: float
    key_ok: bool
    headers: dict[str, str] = field(default_factory=dict)


class LoopbackServer:
    """ThreadingHTTPServer in a background thread; subclasses implement ``respond``."""

    def __init__(self, *, key: str | None, latency: float | tuple[float, float] = 0.0):
        self.key = key
        self.latency = latency
        self.requests: list[Seen] = []
        self._queue: deque[Fault] = deque()
        self._targeted: list[tuple[str, deque[Fault]]] = []
        self._every: list[tuple[int, Fault]] = []
        self._counted = 0
        self._in_flight = 0
        self._max_in_flight: tuple[int, Fault] | None = None
        self._over = threading.local()  # this handler thread's request is over the in-flight limit
        self.refused_in_flight = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- scripting -------------------------------------------------------------------------

    def enqueue(self, *faults: Fault) -> None:
        """Answer the next requests (whichever they are) with these faults, in order."""
        with self._lock:
            self._queue.extend(faults)

    def on(self, match: str, *faults: Fault) -> None:
        """Answer the next requests whose prompt contains ``match`` with these faults."""
        with self._lock:
            self._targeted.append((match, deque(faults)))

    def every(self, n: int, fault: Fault) -> None:
        """Answer every ``n``-th request (by arrival, counting from 1) with ``fault``, for good.

        Deterministic, so a benchmark sees the same fault ratio every time; when two rules fall
        on the same request, the one set first wins.
        """
        with self._lock:
            self._every.append((n, fault))

    def limit_in_flight(self, n: int, fault: Fault) -> None:
        """Answer ``fault`` to any request that arrives while ``n`` others are being answered:
        a service whose capacity (not a sporadic hiccup) is exhausted."""
        with self._lock:
            self._max_in_flight = (n, fault)

    def fault_for(self, prompt_text: str) -> Fault | None:
        with self._lock:
            for match, faults in self._targeted:
                if faults and match in prompt_text:
                    return faults.popleft()
            if self._queue:
                return self._queue.popleft()
            if getattr(self._over, "fault", None) is not None:
                return self._over.fault
            self._counted += 1
            for n, fault in self._every:
                if self._counted % n == 0:
                    return fault
            return None

    def requests_matching(self, text: str) -> list[Seen]:
        return [r for r in self.requests if text in json.dumps(r.body)]

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> LoopbackServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes; with Nagle on, the second waits for the
            # client's delayed ACK (~40 ms), which no real API server makes clients sit through.
            disable_nagle_algorithm = True

            def log_message(self, format, *args):  # keep test output quiet
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw or b"null")
                except ValueError:
                    body = None
                try:
                    server._handle(self, body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test): nothing to answer

        class Server(ThreadingHTTPServer):
            # socketserver's default backlog of 5 drops the SYNs of a burst of new
            # connections, and the client only retries after a 1 s TCP timeout.
            request_queue_size = 256

        self._httpd, self._thread, _ = serve(Handler, Server)
        return self

    def stop(self) -> None:
        self._stopping.set()  # releases hanging handlers
        shut(self._httpd, self._thread)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def origin(self) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    # --- request handling ------------------------------------------------------------------

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)

    def _latency(self) -> float:
        if isinstance(self.latency, tuple):
            return random.uniform(*self.latency)
        return self.latency

    def _handle(self, h: BaseHTTPRequestHandler, body: Any) -> None:
        key_ok = self.key is None or self.key_matches(h)
        with self._lock:
            self.requests.append(Seen(h.path, body, time.monotonic(), key_ok, dict(h.headers.items())))
            limit = self._max_in_flight
            # A refused request takes no capacity: only the ones being answered count.
            over = limit is not None and self._in_flight >= limit[0]
            self.refused_in_flight += over
            self._in_flight += not over
        self._over.fault = limit[1] if over and limit is not None else None
        try:
            status, payload, headers = self.respond(h.path, body, key_ok)
            self._sleep(self._latency())
        finally:
            with self._lock:
                self._in_flight -= not over
        data = wire_bytes(payload)
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        for k, v in headers.items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)

    def key_matches(self, h: BaseHTTPRequestHandler) -> bool:
        raise TypeError("subclass must implement key_matches")

    def respond(self, path: str, body: Any, key_ok: bool) -> tuple[int, Any, dict[str, str]]:
        raise TypeError("subclass must implement respond")

    @staticmethod
    def hostile(fault: Fault) -> tuple[int, Any, dict[str, str]] | None:
        """The answer to a raw or redirect fault, the same in every wire format."""
        if fault.kind == "raw":
            return fault.status, *encoded(fault.body, fault.gzip, fault.headers)
        if fault.kind == "redirect":
            return fault.status, b"", fault.headers
        return None

    @staticmethod
    def patched(fault: Fault | None, answer: dict) -> tuple[int, Any, dict[str, str]]:
        """The normal answer, with a patch fault's changes merged in."""
        if fault is None or fault.kind != "patch":
            return 200, answer, {}
        return 200, *encoded(merged(answer, fault.body), fault.gzip, {})


def encoded(body: Any, gzip: bool, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    data = wire_bytes(body)
    if not gzip:
        return data, headers
    return gzip_module.compress(data, compresslevel=9), {**headers, "Content-Encoding": "gzip"}


def _words(text: str) -> int:
    return len(text.split())


class FakeOpenAI(LoopbackServer):
    """``POST /v1/chat/completions`` as OpenAI (and vLLM, TGI...) answer it.

    ``basic_auth = (user, password)`` makes it a server behind a proxy with a login of its
    own: HTTP clients send a ``user:password@`` of the URL as Basic auth, in place of the key.
    """

    basic_auth: tuple[str, str] | None = None

    @property
    def url(self) -> str:
        return f"{self.origin}/v1"

    def key_matches(self, h) -> bool:
        auth = h.headers.get("Authorization") or ""
        if self.basic_auth is not None and auth.startswith("Basic "):
            return base64.b64decode(auth[len("Basic "):]).decode() == ":".join(self.basic_auth)
        return auth == f"Bearer {self.key}"

    def respond(self, path, body, key_ok):
        if urlsplit(path).path != "/v1/chat/completions":
            return 404, {"error": {"message": f"no route {path}", "type": "invalid_request_error"}}, {}
        if not key_ok:
            # The real API echoes a masked fragment of the key; ours says nothing of it.
            return 401, {"error": {"message": "Incorrect API key provided.",
                                   "type": "invalid_request_error", "param": None,
                                   "code": "invalid_api_key"}}, {}
        messages = body.get("messages") or []
        user = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
        fault = self.fault_for(json.dumps(messages))
        if fault is not None:
            answered = self.hostile(fault) or self._fault(fault)
            if answered is not None:
                return answered
        model = body.get("model", "")
        reasoning = model.startswith(("o1", "o3", "o4", "gpt-5"))
        prompt_tokens = sum(_words(str(m.get("content", ""))) for m in messages)
        limit = body.get("max_completion_tokens") or body.get("max_tokens") or 512
        if fault is not None and fault.kind == "empty_length":
            text, finish, completion, thinking = "", "length", limit, limit
        else:
            text = f"Answer to: {user}"
            words = text.split()
            finish = "length" if len(words) > limit else "stop"
            text = " ".join(words[:limit])
            thinking = 7 if reasoning else 0
            completion = _words(text) + thinking
        return self.patched(fault, {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": f"{model}-2024-08-06" if model else "fake",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": finish,
            }],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion,
                "total_tokens": prompt_tokens + completion,
                "completion_tokens_details": {"reasoning_tokens": thinking},
            },
            "system_fingerprint": "fp_fake",
        })

    def _fault(self, fault: Fault):
        if fault.kind == "status":
            body = fault.body if fault.body is not None else {
                "error": {"message": f"fake error {fault.status}", "type": "server_error",
                          "param": None, "code": None}}
            if fault.status == 429 and fault.body is None:
                body = {"error": {"message": "Rate limit reached for requests per minute (RPM).",
                                  "type": "requests", "param": None, "code": "rate_limit_exceeded"}}
            return fault.status, body, fault.headers
        if fault.kind == "quota":
            return 429, {"error": {
                "message": "You exceeded your current quota, please check your plan and billing details.",
                "type": "insufficient_quota", "param": None, "code": "insufficient_quota"}}, {}
        if fault.kind == "hang":
            self._sleep(fault.seconds)
            return None
        if fault.kind == "malformed":
            return 200, b'{"id": "chatcmpl-x", "choices": [{"message": {"content": "cut', {}
        return None
