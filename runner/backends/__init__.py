"""Backends by name, created through lazy factories.

Importing this package imports no torch and no SDK: each factory imports its module only
when a model of that backend is actually run, and a missing library is reported with the
extra to install.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from runner.errors import BackendUnavailable
from runner.plan import ModelTask

# backend name -> (module, class, pip extra that provides its libraries)
_REGISTRY: dict[str, tuple[str, str, str]] = {
    "hf": ("runner.backends.hf", "HFBackend", "hf"),
    "embed": ("runner.backends.embed", "EmbedderBackend", "hf"),
    "openai": ("runner.backends.openai_api", "OpenAIBackend", "api"),
    "gemini": ("runner.backends.gemini_api", "GeminiBackend", "api"),
    "echo": ("runner.backends.echo", "EchoBackend", ""),
}


def backend_class(name: str) -> Callable:
    try:
        module, cls, extra = _REGISTRY[name]
    except KeyError:
        raise BackendUnavailable(f"unknown backend {name!r}; known: {', '.join(_REGISTRY)}") from None
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        hint = f" install it with: pip install 'medbench[{extra}]'" if extra else ""
        raise BackendUnavailable(
            f"backend {name!r} needs the Python package {e.name!r}, which is not installed;{hint}"
        ) from e
    return getattr(mod, cls)


def create_backend(task: ModelTask):
    return backend_class(task.spec.backend)(task)
