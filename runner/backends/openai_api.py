"""``backend: openai``: chat completions through the official ``openai`` SDK (async client).

Works with OpenAI itself and with any OpenAI-compatible server (vLLM, TGI, llama.cpp,
Gemini's compatibility endpoint) through ``base_url`` or ``OPENAI_BASE_URL``.

Reasoning models (the o1/o3/o4 series and the gpt-5 family) refuse ``max_tokens`` and any
temperature but the default: for them ``max_new_tokens`` is sent as
``max_completion_tokens`` and temperature, top_p and stop are left out, with a warning in
the manifest, so one models.yaml serves gpt-4o and o3 alike. What is sent is recorded under
``parameters.resolved.request_params``.

One attempt per call; :func:`wrap_error` is the one place SDK errors become the runner's.
The SDK sends the request through the guarded HTTP client (``runner.backends.http_client``:
body limit, no key on a redirect elsewhere) and the answer's body is read by
``runner.backends.wire``, field by field, not by the SDK's unchecked models.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import openai

from runner.backends import wire
from runner.backends.base import AsyncGenerator, GenRequest, GenResult
from runner.backends.http_client import ResponseRefused, guarded_client
from runner.backends.retry_after import retry_after_seconds
from runner.credentials import api_key, check_base_url, public_url, scrub_logs
from runner.errors import BackendFatal, PermanentAPIError, TransientAPIError
from runner.prompts import folded_messages, messages_for
from runner.redact import redact

OPENAI_URL = "https://api.openai.com/v1"  # the SDK's own default, made explicit for the redirect rule
REASONING_PREFIXES = ("o1", "o3", "o4", "gpt-5")
# The first o1 releases reject a system message outright.
NO_SYSTEM_ROLE = ("o1-mini", "o1-preview")


def _name(model_id: str) -> str:
    # "openai/gpt-5" on a router, "gpt-5" on OpenAI: the family is in the last part.
    return model_id.rsplit("/", 1)[-1].lower()


def is_reasoning_model(model_id: str) -> bool:
    return _name(model_id).startswith(REASONING_PREFIXES)


def _message(e: openai.APIStatusError) -> str:
    body = e.body if isinstance(e.body, dict) else {}
    error = body.get("error")
    inner = error if isinstance(error, dict) else body
    message = inner.get("message")
    return wire.brief(message if isinstance(message, str) and message else str(e.message))


def _refused(e: BaseException) -> ResponseRefused | None:
    """The guarded client's refusal behind ``e``, if that is what stopped the request."""
    for err in (e, e.__cause__, e.__context__):
        if isinstance(err, ResponseRefused):
            return err
    return None


def wrap_error(e: Exception, *, model: str, env: str, url: str) -> Exception | None:
    """The runner's typed error for an SDK exception, or None when it is not the SDK's."""
    refused = _refused(e)
    if refused is not None:  # the same body again would be refused again: not retried
        return PermanentAPIError(str(refused))
    if isinstance(e, openai.APITimeoutError):
        return TransientAPIError("timeout", "the request timed out")
    if isinstance(e, openai.APIConnectionError):
        cause = type(e.__cause__).__name__ if e.__cause__ else "connection error"
        return TransientAPIError("connection", f"cannot reach {url} ({cause})")
    if isinstance(e, openai.AuthenticationError):
        # The server's text may quote part of the key, so it is not repeated here.
        return BackendFatal(
            f"{model}: {url} rejected the API key from {env} (HTTP 401); check the key, "
            f"or set {env} to a valid one (environment or .env)")
    if isinstance(e, openai.PermissionDeniedError):
        return BackendFatal(f"{model}: permission denied (HTTP 403): {redact(_message(e))}")
    if isinstance(e, openai.NotFoundError):
        return BackendFatal(
            f"{model}: not found at {url} (HTTP 404): {redact(_message(e))}; check the model id "
            "and base_url")
    if isinstance(e, openai.RateLimitError):
        msg = redact(_message(e))
        low = msg.lower()
        if e.code == "insufficient_quota" or "per day" in low or "(rpd)" in low or "(tpd)" in low:
            return BackendFatal(f"{model}: quota exhausted (HTTP 429): {msg}")
        return TransientAPIError("rate_limit", f"rate limited (HTTP 429): {msg}",
                                 retry_after=retry_after_seconds(e.response.headers))
    if isinstance(e, openai.APIStatusError):
        status = e.status_code
        msg = f"HTTP {status}: {redact(_message(e))}"
        if status >= 500 or status in (408, 409):
            return TransientAPIError("server", msg, retry_after=retry_after_seconds(e.response.headers))
        return PermanentAPIError(msg)
    if isinstance(e, openai.APIResponseValidationError | ValueError):
        return TransientAPIError("malformed", f"malformed response body ({type(e).__name__})")
    return None


def _split_query(url: str | None) -> tuple[str | None, dict[str, str]]:
    """A base_url's query string (``?api-key=...&api-version=...``, as some proxies and Azure
    take) as the SDK's ``default_query``: the SDK appends paths after the whole base URL, so
    left in it the query would swallow ``/chat/completions``."""
    if url is None or "?" not in url:
        return url, {}
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")), dict(parse_qsl(parts.query))


class OpenAIBackend(AsyncGenerator):
    prompt_rule = "messages"

    def __init__(self, task):
        super().__init__(task)
        self.client: openai.AsyncOpenAI | None = None
        self.reasoning = is_reasoning_model(self.spec.id)
        self.fold_system = _name(self.spec.id).startswith(NO_SYSTEM_ROLE)
        if self.fold_system:
            self.prompt_rule = "messages-folded"
        self.params = self._request_params()
        self.url = ""

    def _request_params(self) -> dict[str, Any]:
        g = self.task.generation
        spec = self.spec
        p: dict[str, Any] = {}
        if self.reasoning:
            p["max_completion_tokens"] = g.max_new_tokens
            if spec.reasoning_effort:
                p["reasoning_effort"] = spec.reasoning_effort
            if g.temperature != 1.0:
                self.warnings.append(
                    f"temperature {g.temperature:g} not sent: {spec.id} is a reasoning model and "
                    "accepts only the default (1)")
            dropped = [k for k, v in (("top_p", g.top_p), ("stop", g.stop)) if v]
            if dropped:
                self.warnings.append(f"{', '.join(dropped)} not sent: {spec.id} does not accept it")
        else:
            p["max_tokens"] = g.max_new_tokens
            p["temperature"] = g.temperature
            if g.top_p is not None:
                p["top_p"] = g.top_p
            if g.stop:
                p["stop"] = g.stop
            if spec.reasoning_effort:
                self.warnings.append(
                    f"reasoning_effort not sent: {spec.id} is not a reasoning model")
        p["seed"] = g.seed
        return p

    def preflight(self) -> None:
        check_base_url(self.spec.base_url, self.spec.id)
        api_key(self.spec.api_key_env, model=self.spec.id)

    def load(self) -> dict[str, Any]:
        check_base_url(self.spec.base_url, self.spec.id)
        key = api_key(self.spec.api_key_env, model=self.spec.id)
        scrub_logs()
        given = self.spec.base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_URL  # as the SDK reads it
        base_url, query = _split_query(given)
        assert base_url is not None
        # max_retries=0: retries live once, in the API runner, where they are counted.
        self.client = openai.AsyncOpenAI(
            api_key=key, base_url=base_url, default_query=query or None, max_retries=0,
            timeout=self.spec.timeout,
            http_client=guarded_client(openai.DefaultAsyncHttpxClient, base_url,
                                       self.spec.max_response_bytes))
        self.url = public_url(given)  # also remembers its credentials
        return {
            "revision": self.spec.id,
            "hardware": {"api": self.url},
            "request_params": {"model": self.spec.id, **self.params},
            "reasoning_model": self.reasoning,
            "sdk": f"openai {openai.__version__}",
        }

    def build_prompt(self, req: GenRequest) -> list[dict]:
        if self.fold_system:
            return folded_messages(req.system, req.user)
        return messages_for(req.system, req.user)

    async def agenerate(self, req: GenRequest) -> GenResult:
        assert self.client is not None, "load() first"
        try:
            raw = await self.client.chat.completions.with_raw_response.create(
                model=self.spec.id, messages=req.prompt, **self.params)
        except Exception as e:  # the one choke point for SDK errors
            typed = wrap_error(e, model=self.spec.id, env=self.spec.api_key_env, url=self.url)
            if typed is None:
                raise
            raise typed from e
        return answer(wire.parse(raw.content))

    async def aclose(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None

    def close(self) -> None:
        self.client = None


def answer(doc: Any) -> GenResult:
    """One chat completion's answer, read from its JSON (``runner.backends.wire``).

    An answer with no text (``message`` empty, ``content`` null) is malformed unless the
    server says why there is none (finish_reason length or content_filter, or a refusal): the
    engine retries it and then records the error, never an empty success.
    """
    wire.get(doc, (), dict, "an object")
    if not wire.get(doc, ("choices",), list, "an array"):
        raise TransientAPIError("malformed", "choices: no answer in the response")
    wire.get(doc, ("choices", 0), dict, "an object")
    text = wire.text(doc, ("choices", 0, "message", "content"))
    refusal = wire.text(doc, ("choices", 0, "message", "refusal"))
    finish = wire.text(doc, ("choices", 0, "finish_reason"))
    extra: dict[str, Any] = {}
    model = wire.text(doc, ("model",))
    if model:
        extra["model_version"] = model
    if text is None and refusal:
        text, extra["refusal"] = refusal, True
    if text is None:
        if finish not in ("length", "content_filter"):
            raise TransientAPIError("malformed", "choices[0].message.content: missing or null, an answer "
                                                 "without text")
        text = ""
    return GenResult(
        text=text,
        finish_reason=finish,
        input_tokens=wire.count(doc, ("usage", "prompt_tokens")),
        # completion_tokens already includes the reasoning tokens (billed as output).
        output_tokens=wire.count(doc, ("usage", "completion_tokens")),
        reasoning_tokens=wire.count(doc, ("usage", "completion_tokens_details", "reasoning_tokens")),
        extra=extra,
    )
