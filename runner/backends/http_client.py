"""The HTTP client both API SDKs are given: what any server may send back is bounded here.

``openai`` and ``google-genai`` both speak HTTP through ``httpx2``; each backend hands its SDK
a client built by :func:`guarded_client` (``http_client=`` / ``HttpOptions.httpx_async_client``).
Its two event hooks run on every hop of every request, redirects included, whichever
transport or proxy carries it:

- a response body is read through a counter, after decompression: one over the model's
  ``max_response_bytes`` (default :data:`DEFAULT_MAX_RESPONSE_BYTES`) stops with
  :class:`ResponseTooLarge` as soon as it passes the limit, so a gzip bomb costs at most that
  much memory. Only gzip and deflate are asked for and accepted, since only those are
  decompressed here under the limit;
- a request to another origin than the model's endpoint (a redirect elsewhere) goes without
  credentials: the ``Authorization``, ``x-goog-api-key``-style headers and any header that
  holds a remembered key are dropped, as httpx itself drops ``Authorization`` alone. A plain
  http to https upgrade of the same host keeps them.

These errors are not httpx's, so the SDKs let them through unwrapped (the OpenAI SDK would
otherwise report a connection error); each backend's ``wrap_error`` maps them.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx2

from runner.credentials import public_url
from runner.redact import redact

log = logging.getLogger("medbench.api")

DEFAULT_MAX_RESPONSE_BYTES = 16 * 1024 * 1024
# Decompressed at most this much per step, so one small compressed chunk never becomes one
# huge buffer before the counter sees it.
_STEP = 256 * 1024
_ACCEPTED = ("gzip", "x-gzip", "deflate")
_CREDENTIAL_HEADERS = frozenset({
    "authorization", "proxy-authorization", "x-goog-api-key", "api-key", "x-api-key", "cookie",
})


class ResponseRefused(Exception):
    """A response this client will not read; the message holds nothing the server sent."""


class ResponseTooLarge(ResponseRefused):
    def __init__(self, limit: int):
        super().__init__(f"the response body is larger than max_response_bytes ({limit:,} bytes, "
                         "counted after decompression)")
        self.limit = limit


class _Inflater:
    """gzip or deflate, decompressed a bounded step at a time."""

    def __init__(self, encoding: str):
        # 32 + MAX_WBITS: a gzip or a zlib header, detected; raw deflate (no header, as some
        # servers send "deflate") is tried when that fails on the first bytes.
        self._raw_allowed = encoding == "deflate"
        self._d = zlib.decompressobj(32 + zlib.MAX_WBITS)
        self._started = False

    def feed(self, data: bytes) -> Iterator[bytes]:
        while data:
            try:
                out = self._d.decompress(data, _STEP)
            except zlib.error:
                if self._started or not self._raw_allowed:
                    raise ResponseRefused("the response body is not valid gzip/deflate data") from None
                self._d, self._raw_allowed = zlib.decompressobj(-zlib.MAX_WBITS), False
                continue
            self._started = True
            if out:
                yield out
            if self._d.eof:
                return  # anything after the end of the stream is ignored, as httpx does
            data = self._d.unconsumed_tail

    def flush(self) -> bytes:
        return self._d.flush()


class _CappedBody(httpx2.AsyncByteStream):
    """The body as the SDK reads it: decoded here, and never more than ``limit`` bytes."""

    def __init__(self, raw: httpx2.AsyncByteStream, inflater: _Inflater | None, limit: int):
        self._raw, self._inflater, self._limit = raw, inflater, limit

    async def __aiter__(self) -> AsyncIterator[bytes]:
        total = 0
        async for data in self._raw:
            for chunk in self._inflater.feed(data) if self._inflater else (data,):
                total += len(chunk)
                if total > self._limit:
                    raise ResponseTooLarge(self._limit)
                yield chunk
        if self._inflater is not None:
            tail = self._inflater.flush()
            if total + len(tail) > self._limit:
                raise ResponseTooLarge(self._limit)
            if tail:
                yield tail

    async def aclose(self) -> None:
        await self._raw.aclose()


class Guard:
    """The two hooks for one model: its endpoint's origin and its body limit."""

    def __init__(self, base_url: str, max_bytes: int):
        self.origin = httpx2.URL(base_url).origin
        self.max_bytes = max_bytes
        self._told = False

    def trusted(self, url: httpx2.URL) -> bool:
        """True for the endpoint's own origin and a plain http->https upgrade of it."""
        o = url.origin
        if o == self.origin:
            return True
        return (o.host == self.origin.host and self.origin.scheme == "http" and self.origin.port == 80
                and o.scheme == "https" and o.port == 443)

    async def on_request(self, request: httpx2.Request) -> None:
        if self.trusted(request.url):
            return
        dropped = [name for name, value in request.headers.items()
                   if name.lower() in _CREDENTIAL_HEADERS or redact(value) != value]
        for name in dropped:
            del request.headers[name]
        if dropped and not self._told:
            self._told = True
            log.warning("redirected to another origin (%s): the request goes there without the API key",
                        public_url(str(request.url.copy_with(query=None))))

    async def on_response(self, response: httpx2.Response) -> None:
        values = response.headers.get_list("content-encoding", split_commas=True)
        encodings = [v.strip().lower() for v in values if v.strip().lower() not in ("", "identity")]
        if len(encodings) > 1 or (encodings and encodings[0] not in _ACCEPTED):
            raise ResponseRefused("the response body is in an encoding that was not asked for "
                                  "(only gzip and deflate are accepted)")
        inflater = _Inflater(encodings[0]) if encodings else None
        if encodings:
            del response.headers["content-encoding"]  # decoded here, under the limit
        assert isinstance(response.stream, httpx2.AsyncByteStream)
        response.stream = _CappedBody(response.stream, inflater, self.max_bytes)

    def hooks(self) -> dict[str, list[Any]]:
        return {"request": [self.on_request], "response": [self.on_response]}


def guarded_client(client_class: type[httpx2.AsyncClient], base_url: str, max_bytes: int | None,
                   **kwargs: Any) -> httpx2.AsyncClient:
    """An instance of ``client_class`` (the SDK's own default class where it has one, so its
    defaults hold) with the body limit and the redirect rule of one model's endpoint."""
    guard = Guard(base_url, max_bytes or DEFAULT_MAX_RESPONSE_BYTES)
    headers = {"Accept-Encoding": "gzip, deflate", **kwargs.pop("headers", {})}
    return client_class(event_hooks=guard.hooks(), headers=headers, follow_redirects=True, **kwargs)
