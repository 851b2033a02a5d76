"""A loopback server speaking the Gemini API's ``generateContent`` wire format.

``POST /v1beta/models/{model}:generateContent`` with the key in ``x-goog-api-key`` (or
``?key=``), driven by the real ``google-genai`` SDK through ``HttpOptions(base_url=...)``.
Faults are scripted as for the OpenAI fake; the error bodies are Google's
(``{"error": {"code", "message", "status", "details"}}``), including ``RetryInfo`` on a 429
and the ``QuotaFailure`` of an exhausted daily quota; the hostile faults (``Fault.raw``,
``Fault.patch``, ``Fault.redirect``) as well.
"""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qs, urlsplit

from tests.fakes.openai_server import Fault, LoopbackServer

_ROUTE = re.compile(r"^/v1beta/models/(?P<model>[^/:]+):generateContent$")


def google_error(code: int, status: str, message: str, details: list | None = None) -> dict:
    return {"error": {"code": code, "message": message, "status": status, "details": details or []}}


def _words(text: str) -> int:
    return len(text.split())


class FakeGemini(LoopbackServer):
    """Answers ``Answer to: <user text>``; ``thoughts`` adds that many thinking tokens."""

    def __init__(self, *, key: str | None, latency=0.0, thoughts: int = 0):
        super().__init__(key=key, latency=latency)
        self.thoughts = thoughts

    @property
    def url(self) -> str:
        return self.origin

    def key_matches(self, h) -> bool:
        query = parse_qs(urlsplit(h.path).query)
        given = h.headers.get("x-goog-api-key") or (query.get("key") or [None])[0]
        return given == self.key

    def respond(self, path, body, key_ok):
        m = _ROUTE.match(urlsplit(path).path)
        if not m:
            return 404, google_error(404, "NOT_FOUND", f"no route {path}"), {}
        if not key_ok:
            bad_key = "API key not valid. Please pass a valid API key."
            return 400, google_error(400, "INVALID_ARGUMENT", bad_key, [
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                 "domain": "googleapis.com",
                 "metadata": {"service": "generativelanguage.googleapis.com"}}]), {}
        contents = body.get("contents") or []
        user = " ".join(p.get("text", "") for c in contents for p in c.get("parts", []))
        system = " ".join(p.get("text", "") for p in
                          (body.get("systemInstruction") or {}).get("parts", []))
        fault = self.fault_for(json.dumps(body))
        if fault is not None:
            answered = self.hostile(fault) or self._fault(fault)
            if answered is not None:
                return answered
        config = body.get("generationConfig") or {}
        limit = config.get("maxOutputTokens") or 8192
        prompt_tokens = _words(user) + _words(system)
        model = m.group("model")
        usage = {"promptTokenCount": prompt_tokens}
        if fault is not None and fault.kind == "empty_length":
            # What a thinking model returns when thinking used up maxOutputTokens.
            usage |= {"thoughtsTokenCount": limit, "totalTokenCount": prompt_tokens + limit}
            candidate = {"content": {"role": "model"}, "finishReason": "MAX_TOKENS", "index": 0}
        else:
            words = f"Answer to: {user}".split()
            text = " ".join(words[:limit])
            finish = "MAX_TOKENS" if len(words) > limit else "STOP"
            usage |= {"candidatesTokenCount": _words(text),
                      "totalTokenCount": prompt_tokens + _words(text) + self.thoughts}
            if self.thoughts:
                usage["thoughtsTokenCount"] = self.thoughts
            candidate = {"content": {"role": "model", "parts": [{"text": text}]},
                         "finishReason": finish, "index": 0}
        return self.patched(fault, {"candidates": [candidate], "usageMetadata": usage,
                                    "modelVersion": f"{model}-001", "responseId": f"r{len(self.requests)}"})

    def _fault(self, fault: Fault):
        if fault.kind == "status":
            if fault.body is not None:
                return fault.status, fault.body, fault.headers
            if fault.status == 429:
                retry = fault.headers.get("Retry-After", "1")
                return 429, google_error(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted.", [
                    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{retry}s"},
                ]), fault.headers
            status = {500: "INTERNAL", 503: "UNAVAILABLE"}.get(fault.status, "UNKNOWN")
            return fault.status, google_error(fault.status, status, "fake server error"), fault.headers
        if fault.kind == "quota":
            return 429, google_error(
                429, "RESOURCE_EXHAUSTED",
                "You exceeded your current quota, please check your plan and billing details.", [
                    {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{
                        "quotaMetric": "generativelanguage.googleapis.com/"
                                       "generate_content_free_tier_requests",
                        "quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
                        "quotaDimensions": {"location": "global", "model": "gemini-test"},
                        "quotaValue": "250"}]},
                    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "41s"},
                ]), {}
        if fault.kind == "hang":
            self._sleep(fault.seconds)
            return None
        if fault.kind == "malformed":
            return 200, b'{"candidates": [{"content": {"parts": [{"text": "cut', {}
        return None
