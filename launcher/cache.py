"""The launcher's own small cache folder: Hub metadata for sizing, the index of submitted runs.

``$MEDBENCH_CACHE``, else ``$XDG_CACHE_HOME/medbench``, else ``~/.cache/medbench``. Nothing in it
is a secret and everything in it can be deleted: it is fetched or written again when needed.
(What a report computes per text is kept in each run folder instead, under ``<run>/.cache``:
``launcher.scoring.array_cache``.)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from runner.storage import atomic_write


def cache_dir() -> Path:
    explicit = os.environ.get("MEDBENCH_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "medbench"


def read_json(path: Path) -> Any | None:
    """The file's JSON, or None when it is missing or unreadable (a cache never stops a command)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_json(path: Path, data: Any) -> None:
    """Write atomically (a temporary file renamed into place): a reader never sees half a file.

    Through the storage layer's ``atomic_write``, the one atomic write of medbench (the file
    gets the umask, like any other file the user creates).
    """
    atomic_write(path, json.dumps(data, indent=1, sort_keys=True).encode("utf-8"))
