"""``backend: gemini``: the Gemini API through ``google-genai`` (``Client(...).aio``).

google-generativeai is end-of-life; google-genai is its replacement. The system prompt goes
in ``system_instruction``, ``max_new_tokens`` in ``max_output_tokens``, the key in the
``x-goog-api-key`` header, and ``base_url`` (tests, proxies) through ``HttpOptions``.

The SDK is given the guarded HTTP client (``runner.backends.http_client``: a body limit, and
no ``x-goog-api-key`` on a redirect to another origin, which neither httpx nor aiohttp strip
by themselves) and asked for the raw body (``should_return_http_response``), which
``runner.backends.wire`` reads field by field instead of the SDK's pydantic models.

Thinking models count their thoughts against ``max_output_tokens``: when thinking uses it
all, the answer is empty with finish reason MAX_TOKENS. That is recorded as finish_reason
``length`` (with the native reason beside it) and the API runner warns about it in the
manifest; it is never a silent blank. ``output_tokens`` counts what is billed as output,
thoughts included; ``reasoning_tokens`` is the thinking part of it.
"""

from __future__ import annotations

import os
from typing import Any

import httpx2
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from runner.backends import wire
from runner.backends.base import AsyncGenerator, GenRequest, GenResult
from runner.backends.http_client import ResponseRefused, guarded_client
from runner.backends.retry_after import parse_duration, retry_after_seconds
from runner.credentials import api_key, check_base_url, public_url, scrub_logs
from runner.errors import BackendFatal, PermanentAPIError, TransientAPIError
from runner.redact import redact

DEFAULT_URL = "https://generativelanguage.googleapis.com/"
# The wire format this backend speaks; pinned because the SDK's default has moved before.
API_VERSION = "v1beta"

_FILTERED = {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY",
             "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION", "LANGUAGE"}

# The SDK is handed an httpx2 client (never its aiohttp session), so these are its transport errors.
_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (httpx2.TransportError,)
_TIMEOUT_ERRORS: tuple[type[BaseException], ...] = (TimeoutError, httpx2.TimeoutException)


def finish_reason(native: str | None) -> str | None:
    """Gemini's finish reasons in the vocabulary the other backends use."""
    if native is None:
        return None
    if native == "STOP":
        return "stop"
    if native == "MAX_TOKENS":
        return "length"
    if native in _FILTERED:
        return "content_filter"
    return native.lower()


def _details(e: genai_errors.APIError) -> list[dict]:
    # Google's error body as the server sent it: every level is checked, as any may be junk.
    body = e.details if isinstance(e.details, dict) else {}
    inner = body.get("error", body)
    details = inner.get("details") if isinstance(inner, dict) else None
    return [d for d in details if isinstance(d, dict)] if isinstance(details, list) else []


def _is(d: dict, kind: str) -> bool:
    t = d.get("@type")
    return isinstance(t, str) and t.endswith(kind)


def _text(value: object) -> str | None:
    """A server's text field, or None when it sent something else (never a structure's repr)."""
    return value if isinstance(value, str) else None


def _retry_delay(e: genai_errors.APIError) -> float | None:
    for d in _details(e):
        if _is(d, "google.rpc.RetryInfo"):
            return parse_duration(_text(d.get("retryDelay")))
    headers = getattr(getattr(e, "response", None), "headers", None)
    return retry_after_seconds(dict(headers)) if headers else None


def _daily_quota(e: genai_errors.APIError) -> bool:
    for d in _details(e):
        violations = d.get("violations") if _is(d, "google.rpc.QuotaFailure") else None
        for v in violations if isinstance(violations, list) else []:
            if isinstance(v, dict) and "perday" in (_text(v.get("quotaId")) or "").lower():
                return True
    return False


def wrap_error(e: BaseException, *, model: str, env: str, url: str) -> Exception | None:
    """The runner's typed error for an SDK or transport exception, or None when unknown."""
    refused = next((x for x in (e, e.__cause__, e.__context__) if isinstance(x, ResponseRefused)), None)
    if refused is not None:  # the same body again would be refused again: not retried
        return PermanentAPIError(str(refused))
    if isinstance(e, genai_errors.APIError):
        code = int(e.code or 0)
        status = wire.brief(_text(e.status) or "no status")
        msg = redact(wire.brief(_text(e.message) or _text(e.status) or "no message"))
        reasons = {_text(d.get("reason")) for d in _details(e)}
        if code == 401 or "API_KEY_INVALID" in reasons:
            return BackendFatal(
                f"{model}: {url} rejected the API key from {env} (HTTP {code}); check the key, "
                f"or set {env} to a valid one (environment or .env)")
        if code == 403:
            return BackendFatal(f"{model}: permission denied (HTTP 403): {msg}")
        if code == 404:
            return BackendFatal(f"{model}: not found at {url} (HTTP 404): {msg}; check the model id")
        if code == 429:
            if _daily_quota(e):
                return BackendFatal(f"{model}: daily quota exhausted (HTTP 429): {msg}")
            return TransientAPIError("rate_limit", f"rate limited (HTTP 429): {msg}",
                                     retry_after=_retry_delay(e))
        if code >= 500 or code == 408:
            return TransientAPIError("server", f"HTTP {code} {status}: {msg}", retry_after=_retry_delay(e))
        return PermanentAPIError(f"HTTP {code} {status}: {msg}")
    if isinstance(e, _TIMEOUT_ERRORS):
        return TransientAPIError("timeout", "the request timed out")
    if isinstance(e, _TRANSPORT_ERRORS):
        return TransientAPIError("connection", f"cannot reach {url} ({type(e).__name__})")
    # JSONDecodeError, pydantic ValidationError; RecursionError: an error body nested too deep for
    # the SDK's JSON parser.
    if isinstance(e, ValueError | RecursionError):
        return TransientAPIError("malformed", f"malformed response body ({type(e).__name__})")
    return None


def _split(prompt: list[dict]) -> tuple[str | None, str]:
    system = "\n\n".join(m["content"] for m in prompt if m["role"] == "system") or None
    user = "\n\n".join(m["content"] for m in prompt if m["role"] == "user")
    return system, user


class GeminiBackend(AsyncGenerator):
    prompt_rule = "messages"

    def __init__(self, task):
        super().__init__(task)
        self.client: genai.Client | None = None
        self._http: httpx2.AsyncClient | None = None
        # As the SDK reads it, made explicit: the redirect rule needs the endpoint's origin.
        self.endpoint = self.spec.base_url or os.environ.get("GOOGLE_GEMINI_BASE_URL") or DEFAULT_URL
        self.url = public_url(self.endpoint)

    @property
    def _fallbacks(self) -> tuple[str, ...]:
        # The SDK's own name for the same key, honoured when the default is used.
        return ("GOOGLE_API_KEY",) if self.spec.api_key_env == "GEMINI_API_KEY" else ()

    def preflight(self) -> None:
        check_base_url(self.spec.base_url, self.spec.id)
        api_key(self.spec.api_key_env, model=self.spec.id, fallbacks=self._fallbacks)

    def generation_config(self) -> dict[str, Any]:
        """The generation settings sent with every request (system instruction aside)."""
        g = self.task.generation
        c: dict[str, Any] = {"temperature": g.temperature, "max_output_tokens": g.max_new_tokens,
                             "seed": g.seed}
        if g.top_p is not None:
            c["top_p"] = g.top_p
        if g.stop:
            c["stop_sequences"] = list(g.stop)
        if self.spec.thinking_budget is not None:
            c["thinking_config"] = {"thinking_budget": self.spec.thinking_budget}
        return c

    def load(self) -> dict[str, Any]:
        check_base_url(self.spec.base_url, self.spec.id)
        key = api_key(self.spec.api_key_env, model=self.spec.id, fallbacks=self._fallbacks)
        scrub_logs()
        # A connection for every request in flight (httpx's default pool is 100).
        n = max(100, self.spec.concurrency)
        self._http = guarded_client(httpx2.AsyncClient, self.endpoint, self.spec.max_response_bytes,
                                    limits=httpx2.Limits(max_connections=n, max_keepalive_connections=n))
        http = types.HttpOptions(
            base_url=self.endpoint,
            httpx_async_client=self._http,
            api_version=API_VERSION,
            timeout=int(self.spec.timeout * 1000),
            # attempts=1: retries live once, in the API runner. Setting retry_options at all
            # also turns off the SDK's implicit retry on connection errors.
            retry_options=types.HttpRetryOptions(attempts=1),
        )
        self.client = genai.Client(api_key=key, vertexai=False, http_options=http)
        self._config = self.generation_config()
        return {
            "revision": self.spec.id,
            "hardware": {"api": self.url, "api_version": API_VERSION},
            "request_params": {"model": self.spec.id, **self._config},
            "sdk": f"google-genai {genai.__version__}",
        }

    async def agenerate(self, req: GenRequest) -> GenResult:
        assert self.client is not None, "load() first"
        system, user = _split(req.prompt)
        settings = dict(self._config)
        if "thinking_config" in settings:
            settings["thinking_config"] = types.ThinkingConfig(**settings["thinking_config"])
        # The raw body: read by runner.backends.wire, not by the SDK's models.
        config = types.GenerateContentConfig(system_instruction=system, should_return_http_response=True,
                                             **settings)
        try:
            r = await self.client.aio.models.generate_content(
                model=self.spec.id, contents=user, config=config)
        except Exception as e:  # the one choke point for SDK and transport errors
            typed = wrap_error(e, model=self.spec.id, env=self.spec.api_key_env, url=self.url)
            if typed is None:
                raise
            raise typed from e
        raw = r.sdk_http_response
        return answer(wire.parse(raw.body if raw is not None else None))

    async def aclose(self) -> None:
        if self.client is not None:
            await self.client.aio.aclose()
            self.client = None
        if self._http is not None:  # the SDK leaves a client it was given open
            await self._http.aclose()
            self._http = None

    def close(self) -> None:
        self.client = None


def answer(doc: Any) -> GenResult:
    """One generateContent answer, read from its JSON (``runner.backends.wire``).

    A candidate without a text part is malformed unless the server says why there is none
    (finish reason MAX_TOKENS or a safety stop, or a blocked prompt): the engine retries it and
    then records the error, never an empty success.
    """
    wire.get(doc, (), dict, "an object")
    extra: dict[str, Any] = {}
    version = wire.text(doc, ("modelVersion",))
    if version:
        extra["model_version"] = version
    usage: dict[str, Any] = dict(input_tokens=None, output_tokens=None, reasoning_tokens=None)
    if doc.get("usageMetadata") is not None:
        thoughts = wire.count(doc, ("usageMetadata", "thoughtsTokenCount"))
        usage = dict(
            input_tokens=wire.count(doc, ("usageMetadata", "promptTokenCount")),
            output_tokens=wire.add(wire.count(doc, ("usageMetadata", "candidatesTokenCount")), thoughts, 0),
            reasoning_tokens=thoughts if thoughts is not None else 0,
        )
    if not wire.get(doc, ("candidates",), list, "an array"):
        block = wire.text(doc, ("promptFeedback", "blockReason"))
        if block is None:
            raise TransientAPIError("malformed", "candidates: none, and no block reason")
        extra["native_finish_reason"] = f"BLOCKED:{block}"
        return GenResult(text="", finish_reason="content_filter", extra=extra, **usage)
    wire.get(doc, ("candidates", 0), dict, "an object")
    native = wire.text(doc, ("candidates", 0, "finishReason"))
    extra["native_finish_reason"] = native
    parts = wire.get(doc, ("candidates", 0, "content", "parts"), list, "an array") or []
    texts = []
    for i in range(len(parts)):
        part = ("candidates", 0, "content", "parts", i)
        wire.get(doc, part, dict, "an object")
        piece = wire.text(doc, (*part, "text"))
        if piece is not None and not wire.get(doc, (*part, "thought"), bool, "a boolean"):
            texts.append(piece)
    reason = finish_reason(native)
    if not texts and reason not in ("length", "content_filter"):
        raise TransientAPIError("malformed", "candidates[0].content.parts: no text, an answer without text")
    return GenResult(text="".join(texts), finish_reason=reason, extra=extra, **usage)
