"""``backend: gemini``: the Gemini API through ``google-genai`` (``Client(...).aio``).

google-generativeai is end-of-life; google-genai is its replacement. The system prompt goes
in ``system_instruction``, ``max_new_tokens`` in ``max_output_tokens``, the key in the
``x-goog-api-key`` header, and ``base_url`` (tests, proxies) through ``HttpOptions``.

Thinking models count their thoughts against ``max_output_tokens``: when thinking uses it
all, the answer is empty with finish reason MAX_TOKENS. That is recorded as finish_reason
``length`` (with the native reason beside it) and the API runner warns about it in the
manifest; it is never a silent blank. ``output_tokens`` counts what is billed as output,
thoughts included; ``reasoning_tokens`` is the thinking part of it.
"""

from __future__ import annotations

from typing import Any

from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from runner.backends.base import AsyncGenerator, GenRequest, GenResult
from runner.backends.retry_after import parse_duration, retry_after_seconds
from runner.credentials import api_key, check_base_url, public_url, scrub_logs
from runner.errors import BackendFatal, PermanentAPIError, TransientAPIError
from runner.redact import redact

DEFAULT_URL = "https://generativelanguage.googleapis.com/"
# The wire format this backend speaks; pinned because the SDK's default has moved before.
API_VERSION = "v1beta"

_FILTERED = {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY",
             "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION", "LANGUAGE"}

try:  # the SDK's async transport is aiohttp when installed, else httpx2
    import aiohttp

    _TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (aiohttp.ClientError,)
except ImportError:
    _TRANSPORT_ERRORS = ()
try:
    import httpx2

    _TRANSPORT_ERRORS += (httpx2.TransportError,)
    _TIMEOUT_ERRORS: tuple[type[BaseException], ...] = (TimeoutError, httpx2.TimeoutException)
except ImportError:
    _TIMEOUT_ERRORS = (TimeoutError,)


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
    body = e.details if isinstance(e.details, dict) else {}
    inner = body.get("error", body)
    details = inner.get("details") if isinstance(inner, dict) else None
    return [d for d in details or [] if isinstance(d, dict)]


def _retry_delay(e: genai_errors.APIError) -> float | None:
    for d in _details(e):
        if d.get("@type", "").endswith("google.rpc.RetryInfo"):
            return parse_duration(d.get("retryDelay"))
    headers = getattr(getattr(e, "response", None), "headers", None)
    return retry_after_seconds(dict(headers)) if headers else None


def _daily_quota(e: genai_errors.APIError) -> bool:
    for d in _details(e):
        if d.get("@type", "").endswith("google.rpc.QuotaFailure"):
            for v in d.get("violations") or []:
                if "perday" in str(v.get("quotaId", "")).lower():
                    return True
    return False


def wrap_error(e: BaseException, *, model: str, env: str, url: str) -> Exception | None:
    """The runner's typed error for an SDK or transport exception, or None when unknown."""
    if isinstance(e, genai_errors.APIError):
        code = int(e.code or 0)
        msg = redact(str(e.message or e.status or "no message"))
        reasons = {str(d.get("reason")) for d in _details(e)}
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
            return TransientAPIError("server", f"HTTP {code} {e.status}: {msg}", retry_after=_retry_delay(e))
        return PermanentAPIError(f"HTTP {code} {e.status}: {msg}")
    if isinstance(e, _TIMEOUT_ERRORS):
        return TransientAPIError("timeout", "the request timed out")
    if isinstance(e, _TRANSPORT_ERRORS):
        return TransientAPIError("connection", f"cannot reach {url} ({type(e).__name__})")
    if isinstance(e, ValueError):  # JSONDecodeError, pydantic ValidationError
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
        self.url = public_url(self.spec.base_url or DEFAULT_URL)

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
        http = types.HttpOptions(
            base_url=self.spec.base_url,
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
        config = types.GenerateContentConfig(system_instruction=system, **settings)
        try:
            r = await self.client.aio.models.generate_content(
                model=self.spec.id, contents=user, config=config)
        except Exception as e:  # the one choke point for SDK and transport errors
            typed = wrap_error(e, model=self.spec.id, env=self.spec.api_key_env, url=self.url)
            if typed is None:
                raise
            raise typed from e
        return self._result(r)

    def _result(self, r: types.GenerateContentResponse) -> GenResult:
        extra: dict[str, Any] = {}
        if r.model_version:
            extra["model_version"] = r.model_version
        um = r.usage_metadata
        thoughts = (um.thoughts_token_count or 0) if um else 0
        usage: dict[str, Any] = dict(
            input_tokens=um.prompt_token_count if um else None,
            output_tokens=((um.candidates_token_count or 0) + thoughts) if um else None,
            reasoning_tokens=thoughts if um else None,
        )
        if not r.candidates:
            feedback = r.prompt_feedback
            block = feedback.block_reason if feedback else None
            if block is None:
                raise TransientAPIError("malformed", "response without candidates or a block reason")
            extra["native_finish_reason"] = f"BLOCKED:{getattr(block, 'value', block)}"
            return GenResult(text="", finish_reason="content_filter", extra=extra, **usage)
        cand = r.candidates[0]
        native = getattr(cand.finish_reason, "value", cand.finish_reason)
        extra["native_finish_reason"] = native
        parts = (cand.content.parts if cand.content else None) or []
        text = "".join(p.text for p in parts if p.text and not p.thought)
        return GenResult(text=text, finish_reason=finish_reason(native), extra=extra, **usage)

    async def aclose(self) -> None:
        if self.client is not None:
            await self.client.aio.aclose()
            self.client = None

    def close(self) -> None:
        self.client = None
