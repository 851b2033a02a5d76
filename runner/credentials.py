"""API keys: read from the environment (or a ``.env`` file), never written anywhere.

Locally ``launcher`` loads ``./.env`` into the environment at start; a runner started some
other way still finds a key in ``./.env``. In the cluster the key comes from a Kubernetes
Secret through ``secretKeyRef``. Every key handed out is remembered (``runner.redact``) so
that it is scrubbed from any text before that reaches a log, a record or a manifest;
:func:`public_url` does the same for credentials in a URL.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from runner.errors import BackendUnavailable, ConfigError
from runner.redact import remember


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
    """A URL fit for a manifest: no user:password@, no query string."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def check_base_url(url: str | None, model: str) -> None:
    """A ``base_url`` must be http(s); a typo such as ``localhost:8000/v1`` fails before any run."""
    if url is not None and urlsplit(url).scheme not in ("http", "https"):
        raise ConfigError(f"{model}: base_url {public_url(url)!r} must start with http:// or https://")
