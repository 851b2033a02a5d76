"""API keys: read from the environment (or a ``.env`` file), never written anywhere.

Locally ``launcher`` loads ``./.env`` into the environment at start; a runner started some
other way still finds a key in ``./.env``. In the cluster the key comes from a Kubernetes
Secret through ``secretKeyRef``. Every key handed out is remembered (``runner.redact``) so
that it is scrubbed from any text before that reaches a log, a record or a manifest;
:func:`public_url` is the one function that makes a URL fit to record or print.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from runner.errors import BackendUnavailable, ConfigError
from runner.redact import MASK, redact, redact_headers, remember

# MASK stands where a credential was taken out of a URL: the same mark ``redact`` leaves.

# Query parameters kept as written: names whose values are never secrets (Azure OpenAI's
# api-version, Google's alt). Any other parameter keeps its name with its value masked: an
# unknown name may carry a key, and a list of secret-looking names would miss the next one.
_PUBLIC_PARAMS = frozenset({"api-version", "api_version", "alt", "version"})
_PARAM_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,39}$")
# Values of these are also scrubbed from any other text (an SDK message quoting the URL);
# other masked values are not, as scrubbing "gpt-4o" everywhere would mangle the output.
_SECRET_NAME = re.compile(r"key|token|secret|sig|pass|pwd|auth|credential|session", re.IGNORECASE)
# A parameter without a name (``?sk-...``) this long is taken for a key, and scrubbed too.
_BARE_SECRET_LEN = 16


def _from_dotenv(name: str, path: Path) -> str | None:
    if not path.is_file():
        return None
    try:
        from dotenv import dotenv_values
    except ImportError:
        return None
    value = dotenv_values(path).get(name)
    return value or None


def api_key(env_name: str, *, model: str, fallbacks: tuple[str, ...] = (),
            dotenv: Path | None = None) -> str:
    """The key in ``env_name`` (or the first of ``fallbacks`` that is set).

    Raises ``BackendUnavailable`` (exit 2) naming the variable and the ``.env`` file to use.
    """
    dotenv = dotenv if dotenv is not None else Path(".env")
    for name in (env_name, *fallbacks):
        value = (os.environ.get(name) or "").strip() or (_from_dotenv(name, dotenv) or "").strip()
        if value:
            remember(value)
            return value
    also = f" (or {', '.join(fallbacks)})" if fallbacks else ""
    raise BackendUnavailable(
        f"{model}: no API key: set the environment variable {env_name}{also}, or put a line "
        f"{env_name}=... in a .env file in the folder you run from; in the cluster it comes "
        "from the model's Kubernetes Secret"
    )


def public_url(url: str) -> str:
    """``url`` fit to record or print (run.json, manifests, logs, error messages).

    ``user:password@`` becomes ``***@``; of the query string, ``api-version``, ``alt`` and
    ``version`` are kept as written, any other parameter keeps its name with its value
    masked (``api-key=***``), and a parameter without a name is dropped; the fragment goes.
    The credentials taken out are also remembered (``runner.redact``), so a server's or an
    SDK's message that quotes the full URL is scrubbed as well. Applying it twice changes
    nothing, so a URL read back from run.json records the same.
    """
    try:
        parts = urlsplit(url)
    except ValueError:  # an unbalanced "[" in an IPv6 host
        return "(a URL that cannot be parsed)"
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if at:
        for secret in userinfo.split(":", 1):
            remember(secret)
            remember(unquote(secret))
    query = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name.lower() in _PUBLIC_PARAMS:
            query.append((name, value))
        elif value and _PARAM_NAME.match(name):
            query.append((name, MASK))
            if _SECRET_NAME.search(name):
                remember(value)
        elif len(name) >= _BARE_SECRET_LEN:
            remember(name)
    netloc = f"{MASK}@{hostport}" if at else hostport
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query, safe="*"), ""))


def check_base_url(url: str | None, model: str) -> None:
    """A ``base_url`` must be http(s) (a typo such as ``localhost:8000/v1`` fails before any
    run), and must not be one whose credentials were masked when the run was staged."""
    if url is None:
        return
    if urlsplit(url).scheme not in ("http", "https"):
        raise ConfigError(f"{model}: base_url {public_url(url)!r} must start with http:// or https://")
    if public_url(url) == url and (f"{MASK}@" in url or f"={MASK}" in url):
        raise ConfigError(
            f"{model}: base_url {url!r} held credentials, and a run records none (run.json is "
            "written without them), so this copy of the run cannot use them; give the key through "
            "api_key_env (a Kubernetes Secret in the cluster) instead of the URL")


class RedactSecrets(logging.Filter):
    """Scrubs every remembered secret from a log record (an HTTP library logging a URL)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # arguments that do not fit: logging reports that itself
            return True
        clean = redact_headers(redact(message))
        if clean != message:
            record.msg, record.args = clean, None
        return True


def scrub_logs() -> None:
    """Pass every log line through :class:`RedactSecrets` on its way out.

    Called when an API model starts: the HTTP library under its SDK (httpx, or a fork of it
    under another name) logs each request's full URL, query string and ``user:password@``
    included. The filter sits on the root logger's handlers, where every line ends up
    (stderr, the pod's stored log), whatever library logged it.
    """
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactSecrets) for f in handler.filters):
            handler.addFilter(RedactSecrets())
