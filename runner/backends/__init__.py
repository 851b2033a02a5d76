"""Backends by name, created through lazy factories read from the descriptors.

Importing this package imports no torch and no SDK: a backend's module is imported only when
a model of that backend is actually run, and a missing library is reported with the extra to
install. What a backend is called, its config and its extra live in its descriptor
(``runner.config.backends``).
"""

from __future__ import annotations

import importlib

from runner.backends.base import Backend
from runner.config.backends import descriptor
from runner.errors import BackendUnavailable, install_hint
from runner.plan import ModelTask


def backend_class(name: str) -> type[Backend]:
    try:
        d = descriptor(name)
    except KeyError as e:
        raise BackendUnavailable(str(e.args[0])) from None
    module, _, cls = d.impl.partition(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] in ("runner", "launcher"):
            raise  # our own module is missing: a bug, not an extra to install
        hint = f" install it with: {install_hint(d.extra)}" if d.extra else ""
        raise BackendUnavailable(
            f"backend {name!r} needs the Python package {e.name!r}, which is not installed;{hint}"
        ) from e
    found: type[Backend] = getattr(mod, cls)
    return found


def create_backend(task: ModelTask) -> Backend:
    return backend_class(task.spec.backend)(task)
