"""Secrets that must never reach output: every key handed out is remembered here, and
:func:`redact` scrubs them from any text (an SDK error, a server's message) before that text
reaches a log, a record, a manifest or the terminal.

At the bottom of the import graph (it imports nothing of ours), so the error classes can
redact their own messages.
"""

from __future__ import annotations

import re
import threading

_lock = threading.Lock()
_secrets: set[str] = set()

# Shorter strings than this are not scrubbed: replacing "a" everywhere would mangle text,
# and no real API key is that short.
_MIN_SECRET_LEN = 6


def remember(secret: str) -> None:
    """Register a value that must never appear in output."""
    if len(secret) >= _MIN_SECRET_LEN:
        with _lock:
            _secrets.add(secret)


def redact(text: str) -> str:
    """``text`` with every remembered key replaced by ``***``."""
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for s in secrets:
        if s in text:
            text = text.replace(s, "***")
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
    return _SIGNATURE.sub(r"\g<1>***", text)


def _mask_header(m: re.Match[str]) -> str:
    value = m.group(3)
    quote = value[:2] if value.startswith("b") and value[1:2] in ("'", '"') else value[:1]
    masked = f"{quote}***{quote[-1]}" if quote and quote[-1] in "'\"" else "***"
    return f"{m.group(1)}{m.group(2)}{masked}"
