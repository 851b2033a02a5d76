"""Secrets that must never reach output: every key handed out is remembered here, and
:func:`redact` scrubs them from any text (an SDK error, a server's message, a server's answer)
before that text reaches a log, a record, a manifest or the terminal.

A key is still the key when a server echoes it in another case (``SK-ABC...``) or cut short
by a few characters, so those are scrubbed too (see :func:`redact` for how far that goes).
Text on its way out must also be writable: a lone surrogate (``"\\ud800"`` in a server's JSON)
cannot be encoded, so :func:`redact` replaces each with U+FFFD, as any UTF-8 decoder does with
a bad byte; :func:`replace_surrogates` does that alone and says how many it replaced.

At the bottom of the import graph (it imports nothing of ours), so the error classes can
redact their own messages.
"""

from __future__ import annotations

import functools
import re
import threading

_lock = threading.Lock()
_secrets: set[str] = set()

# Shorter strings than this are not scrubbed: replacing "a" everywhere would mangle text,
# and no real API key is that short.
_MIN_SECRET_LEN = 6
# How many characters a key may miss (from its start, its end, or both together) and still be
# the key. A server that cuts the last character or two off the key it echoes still leaks it:
# guessing four base-62 characters is 15 million tries, so up to four missing is the key. Five
# or more, and the fragment stops being worth hunting for: masked forms servers print on
# purpose ("sk-...abcd", the last four shown) are far shorter, and stay.
_MAX_MISSING = 4
# ...and a fragment shorter than this is never taken for the key, so a short password's tail
# is not hunted in ordinary prose. Twelve characters of a random key do not occur by chance;
# a secret under 16 characters may therefore miss fewer than four, and one under 13 must be
# whole (in any case) to be scrubbed.
_MIN_FRAGMENT = 12

MASK = "***"
REPLACEMENT = "\ufffd"
# In a Python str every code point in this range is a lone surrogate (pairs are one code point).
_SURROGATE = re.compile("[\ud800-\udfff]")


def remember(secret: str) -> None:
    """Register a value that must never appear in output."""
    if len(secret) >= _MIN_SECRET_LEN:
        with _lock:
            _secrets.add(secret)


def replace_surrogates(text: str) -> tuple[str, int]:
    """``text`` with every lone surrogate replaced by U+FFFD, and how many there were."""
    return _SURROGATE.subn(REPLACEMENT, text)


@functools.lru_cache(maxsize=64)
def _core(secret: str) -> tuple[re.Pattern[str], int]:
    """The part every accepted fragment of ``secret`` contains, as a case-insensitive pattern,
    and how many characters may be missing around it."""
    missing = max(0, min(_MAX_MISSING, len(secret) - _MIN_FRAGMENT))
    core = secret[missing:len(secret) - missing]
    return re.compile(re.escape(core), re.IGNORECASE), missing


def _same(a: str, b: str) -> bool:
    return a.lower() == b.lower()


def _spans(text: str, secret: str) -> list[tuple[int, int]]:
    """Where ``secret`` stands in ``text``: whole, in any case, or missing at most a few
    characters at its ends (the fragment then at least ``_MIN_FRAGMENT`` long)."""
    core, missing = _core(secret)
    n = len(secret)
    spans = []
    for m in core.finditer(text):
        start, end = m.span()
        before = missing  # characters of the key before the core not yet matched
        while before and start and _same(text[start - 1], secret[before - 1]):
            start, before = start - 1, before - 1
        after = missing
        while after and end < len(text) and _same(text[end], secret[n - after]):
            end, after = end + 1, after - 1
        if end - start >= n - missing:
            spans.append((start, end))
    return spans


def redact(text: str) -> str:
    """``text`` with every remembered key replaced by ``***`` and every lone surrogate by U+FFFD.

    A key is found whole in any case, and also missing up to four characters at its ends
    (never a fragment shorter than twelve characters): see ``_MAX_MISSING``.
    """
    text = replace_surrogates(text)[0]
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for s in secrets:
        spans = _spans(text, s)
        for start, end in reversed(spans):
            text = text[:start] + MASK + text[end:]
    return text


# HTTP headers that carry a credential, as an HTTP library's debug log shows them: botocore's
# request repr (``'Authorization': b'AWS4-HMAC-SHA256 Credential=..., Signature=...'``), its
# canonical request (``x-amz-security-token:...``), or a raw header line. Their values are
# masked whether or not the credential was remembered: a signature or a refreshed session token
# never was.
_HEADER = re.compile(
    r"(?i)(\b(?:proxy-)?authorization|\bx-amz-security-token|\bx-amz-server-side-encryption-customer-key"
    r"|\bx-api-key|\bx-goog-api-key)(['\"]?:[ \t]*)(b?'[^'\n]*'|b?\"[^\"\n]*\"|[^\r\n]*)")
# botocore.auth's own debug line: "Signature:\n<64 hex digits>".
_SIGNATURE = re.compile(r"(Signature:\s*)[0-9a-f]{64}")


def redact_headers(text: str) -> str:
    """``text`` with the values of credential-bearing HTTP headers replaced by ``***``."""
    text = _HEADER.sub(_mask_header, text)
    return _SIGNATURE.sub(lambda m: m.group(1) + MASK, text)


def _mask_header(m: re.Match[str]) -> str:
    value = m.group(3)
    quote = value[:2] if value.startswith("b") and value[1:2] in ("'", '"') else value[:1]
    masked = f"{quote}{MASK}{quote[-1]}" if quote and quote[-1] in "'\"" else MASK
    return f"{m.group(1)}{m.group(2)}{masked}"
