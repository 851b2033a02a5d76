"""The one line that names a run's questions when they come from a named benchmark.

run.json's ``questions_source`` (``runner/benchmarks/to_questions.py`` writes it) holds the
benchmark, its title, subject, split, revision and sample. A number out of context means
little ("62% accuracy" on what?), so the report's header, metrics.json and the terminal
summary all carry the same line, e.g. "MedQA (USMLE, 4 options) — test split, 500 of 1,273
questions (seed 0), revision 17af935".

run.json is read back from disk, possibly written by an older medbench: a field that is
missing or of another type is left out of the line, never a reason to fail the report.
"""

from __future__ import annotations

from typing import Any

REVISION_CHARS = 7  # a short commit, as git and the Hub print it


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _sample(source: dict[str, Any]) -> str | None:
    n, rows = _int(source.get("n_questions")), _int(source.get("rows_in_split"))
    seed = _int(source.get("seed"))
    if n is None:
        return None
    if rows is None:
        return f"{n:,} questions"
    if n >= rows:
        return f"all {rows:,} questions"
    if seed is None:  # a limit without a seed takes the split's first rows, as lm-eval's --limit
        return f"the first {n:,} of {rows:,} questions"
    return f"{n:,} of {rows:,} questions (seed {seed})"


def _version(source: dict[str, Any]) -> str | None:
    revision = _str(source.get("revision"))
    if revision:
        return f"revision {revision[:REVISION_CHARS]}"
    files = _str(source.get("files_sha256"))
    if files:  # a local copy: the digest of the files read stands for the revision
        return f"local copy, files sha256 {files[:REVISION_CHARS]}"
    return None


def source_label(source: Any) -> str | None:
    """The line naming a benchmark's questions; None when ``source`` names no benchmark."""
    if not isinstance(source, dict):
        return None
    name = _str(source.get("title")) or _str(source.get("benchmark"))
    if name is None:
        return None
    subject = _str(source.get("subject"))
    if subject:
        name += f": {subject}"
    split = _str(source.get("split"))
    details = [part for part in (f"{split} split" if split else None, _sample(source), _version(source))
               if part]
    return f"{name} — {', '.join(details)}" if details else name
