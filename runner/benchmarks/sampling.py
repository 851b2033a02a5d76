"""Which rows of a split a run uses: all, the first ``limit``, or a seeded sample of ``limit``.

The seeded sample ranks rows by ``sha256(f"{seed}:{row}")`` and keeps the ``limit`` lowest,
then returns them in dataset order. Unlike ``random.sample`` this cannot change with the
Python version, and a smaller sample is always part of a larger one with the same seed
(``limit: 100`` is the first hundred picks of ``limit: 500``), so results can be extended.
"""

from __future__ import annotations

import hashlib


def sample_rows(n: int, limit: int | None, seed: int | None) -> list[int]:
    """Row numbers (0-based, ascending) out of ``n``."""
    if limit is None or limit >= n:
        return list(range(n))
    if seed is None:
        return list(range(limit))
    ranked = sorted(range(n), key=lambda row: hashlib.sha256(f"{seed}:{row}".encode()).digest())
    return sorted(ranked[:limit])
