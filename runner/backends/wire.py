"""A server's JSON answer, read without trusting it.

The API backends keep their SDK for the request, the key, the status codes and the errors,
and read the answer's body here instead of through the SDK's models: OpenAI's builds its
objects without checking them (a number where the text belongs arrives as a number, a key in
a field arrives in the record), and google-genai's validates with pydantic, refuses the
whole answer for one odd usage count, and puts the offending value (maybe a key the server
echoed) into its message.

Each field the runner uses is read by its path. A field of the wrong type is a malformed
answer (``TransientAPIError("malformed")``) whose message names the field and the JSON types,
never the value. Token counts are taken as they come, whatever their type: the engine judges
them (``runner.engine.untrusted``), and an impossible count makes the usage unknown, not the
answer lost.
"""

from __future__ import annotations

import json
import math
from typing import Any

from runner.errors import TransientAPIError

Path = tuple[str | int, ...]

_JSON_TYPES: tuple[tuple[type, str], ...] = (
    (bool, "a boolean"), (str, "text"), (int, "a number"), (float, "a number"),
    (dict, "an object"), (list, "an array"),
)


def parse(body: bytes | str | None) -> Any:
    """The body as JSON. Bytes that are not UTF-8 become lone surrogates, which the engine
    replaces (and counts) like the escaped ones, so the rest of the answer is kept."""
    if body is None:
        body = b""
    text = body.decode("utf-8", errors="surrogateescape") if isinstance(body, bytes) else body
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:  # RecursionError: nesting deeper than Python's stack
        raise TransientAPIError("malformed", f"the response body is not JSON ({type(e).__name__})") from None


# The most of a server's own message (an error text) quoted in ours.
MESSAGE_CHARS = 500


def brief(text: str) -> str:
    """A server's message, cut to ``MESSAGE_CHARS``: an error page of megabytes is no message."""
    if len(text) <= MESSAGE_CHARS:
        return text
    return f"{text[:MESSAGE_CHARS]}... ({len(text):,} characters)"


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    for kind, name in _JSON_TYPES:
        if isinstance(value, kind):
            return name
    return type(value).__name__


def where(path: Path) -> str:
    """``choices[0].message.content``"""
    out = ""
    for step in path:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else step)
    return out or "the body"


def malformed(path: Path, expected: str, got: Any) -> TransientAPIError:
    return TransientAPIError("malformed", f"{where(path)}: expected {expected}, got {json_type(got)}")


def get(doc: Any, path: Path, kind: type | tuple[type, ...], expected: str) -> Any:
    """The value at ``path`` (object keys and array indices); None when it is absent or null.

    A value, or a container on the way to it, of another type is a malformed answer.
    """
    node = doc
    for i, step in enumerate(path):
        if node is None:
            return None
        if isinstance(step, int):
            if not isinstance(node, list):
                raise malformed(path[:i], "an array", node)
            node = node[step] if step < len(node) else None
        else:
            if not isinstance(node, dict):
                raise malformed(path[:i], "an object", node)
            node = node.get(step)
    if node is None:
        return None
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(node, kinds) or (isinstance(node, bool) and bool not in kinds):
        raise malformed(path, expected, node)
    return node


def text(doc: Any, path: Path) -> str | None:
    return get(doc, path, str, "text or null")


def count(doc: Any, path: Path) -> Any:
    """A token count as the server sent it, any JSON value (None when absent). Never raises:
    where a container on the way is of another type, that container is the count, and the
    engine refuses it as it refuses anything that is not a whole number."""
    node = doc
    for step in path:
        if node is None:
            return None
        if isinstance(step, int) and isinstance(node, list):
            node = node[step] if step < len(node) else None
        elif isinstance(step, str) and isinstance(node, dict):
            node = node.get(step)
        else:
            return node
    return node


def whole(value: Any) -> int | None:
    """``value`` as a whole number: an integer, or a finite float without a fraction (JSON
    does not tell 12 from 12.0); None for anything else (text, a boolean, 1.5, NaN)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def add(*counts: Any) -> Any:
    """The sum of counts that are whole numbers (None counts as 0; all None gives None); the
    first count that is not one is returned as it is, for the engine to refuse."""
    total = None
    for c in counts:
        if c is None:
            continue
        n = whole(c)
        if n is None:
            return c
        total = (total or 0) + n
    return total
