"""Numbers read from the environment: one parser, one message.

A bad value is the user's to fix: an ``InputError`` (exit 2), one line that names the variable,
the value and what is expected. An empty variable counts as unset.

    MEDBENCH_LEASE_SECONDS     seconds above 0, default 60       runner.storage.lease
    MEDBENCH_S3_MAX_ATTEMPTS   a whole number, 1 or more, default 8   runner.storage.s3
    MEDBENCH_LOG_INTERVAL      seconds above 0, default 30       runner.main
    MEDBENCH_SHARDS, JOB_COMPLETION_INDEX  whole numbers (or --shards, --shard)  runner.main
"""

from __future__ import annotations

import math
import os

from runner.errors import InputError


def whole_number(raw: str, name: str, *, minimum: int) -> int:
    """``raw`` as a whole number of at least ``minimum``; ``name`` says where it came from."""
    try:
        value: int | None = int(raw)
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise InputError(f"{name}={raw!r}: expected a whole number of at least {minimum}")
    return value


def seconds(raw: str, name: str) -> float:
    """``raw`` as a finite number of seconds above 0."""
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise InputError(f"{name}={raw!r}: expected a number of seconds above 0")
    return value


def env_whole_number(name: str, default: int, *, minimum: int = 1) -> int:
    raw = os.environ.get(name)
    return whole_number(raw, name, minimum=minimum) if raw else default


def env_seconds(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return seconds(raw, name) if raw else default
