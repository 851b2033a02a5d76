"""What an S3 ETag says about an object's bytes, checked against a local file.

A single-part upload's ETag is the MD5 of its body. A multipart upload's is the MD5 of its
parts' MD5s followed by ``-<number of parts>``, so checking it needs the part sizes: uploads
by boto3, the AWS CLI and most tools use parts of one size (the last one shorter), which
:func:`likely_part_sizes` guesses; the store itself tells the exact sizes when asked
(``HeadObject`` with ``PartNumber``, see ``runner.storage.s3``). Objects encrypted with SSE-KMS
or SSE-C have ETags that are no MD5 at all; only their size can be checked.

No boto3 here: ``launcher collect`` uses it to skip unchanged files before opening any client.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from pathlib import Path

MiB = 1024 * 1024
_CHUNK = MiB


def parts_count(etag: str) -> int | None:
    """The number of parts of a multipart ETag (``...-3``), None for a plain MD5 tag."""
    head, dash, count = etag.rpartition("-")
    if not dash:
        return None
    return int(count) if count.isdigit() and int(count) >= 1 and head else 0


def file_md5(path: Path) -> str:
    h = hashlib.md5()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def even_parts(size: int, part_size: int) -> list[int]:
    """The sizes of the parts of a ``size``-byte upload in ``part_size`` parts."""
    if size == 0:
        return [0]
    full, rest = divmod(size, part_size)
    return [part_size] * full + ([rest] if rest else [])


def parts_etag(path: Path, part_sizes: Iterable[int]) -> str:
    """The multipart ETag of ``path`` uploaded in parts of ``part_sizes`` bytes."""
    digests = b""
    count = 0
    with path.open("rb") as f:
        for size in part_sizes:
            h = hashlib.md5()
            for chunk in _read(f, size):
                h.update(chunk)
            digests += h.digest()
            count += 1
    return f"{hashlib.md5(digests).hexdigest()}-{count}"


def likely_part_sizes(size: int, count: int, ours: int) -> list[int]:
    """Part sizes that give ``count`` parts for ``size`` bytes, most likely first: ours, the
    8 and 5 MiB other tools mostly use, the smallest whole number of MiB that gives ``count``."""
    even = -(-size // count)
    out = []
    for part in (ours, 8 * MiB, 5 * MiB, -(-even // MiB) * MiB):
        if part > 0 and part not in out and len(even_parts(size, part)) == count:
            out.append(part)
    return out


def matches(path: Path, etag: str, *, ours: int = 8 * MiB) -> bool:
    """True when ``path``'s bytes give ``etag`` (a multipart tag: for one of the likely part
    sizes). False may also mean an ETag that is no MD5 (SSE-KMS) or parts of unusual sizes."""
    count = parts_count(etag)
    if count is None:
        return file_md5(path) == etag
    if not count:
        return False
    size = path.stat().st_size
    return any(parts_etag(path, even_parts(size, part)) == etag
               for part in likely_part_sizes(size, count, ours))


def _read(f, size: int) -> Iterator[bytes]:
    while size > 0:
        chunk = f.read(min(_CHUNK, size))
        if not chunk:
            return
        size -= len(chunk)
        yield chunk
