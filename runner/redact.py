"""Secrets that must never reach output: every key handed out is remembered here, and
:func:`redact` scrubs them from any text (an SDK error, a server's message) before that text
reaches a log, a record, a manifest or the terminal.

At the bottom of the import graph (it imports nothing of ours), so the error classes can
redact their own messages.
"""

from __future__ import annotations

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
