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
"""

from __future__ import annotations

import base64
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


@dataclass
class Fault:
    """One scripted misbehaviour, consumed by the request it answers."""

    kind: str  # "status" | "hang" | "malformed" | "empty_length" | "quota" | "drop"
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

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
    """A request as the server received it (credentials stripped)."""

    path: str
    body: Any
    at: float
    key_ok: bool


class LoopbackServer:
    """ThreadingHTTPServer in a background thread; subclasses implement ``respond``."""

    def __init__(self, *, key: str, latency: float | tuple[float, float] = 0.0):
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
        key_ok = self.key_matches(h)
        with self._lock:
            self.requests.append(Seen(h.path, body, time.monotonic(), key_ok))
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
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
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
            answered = self._fault(fault)
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
        return 200, {
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
        }, {}

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
