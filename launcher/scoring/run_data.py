"""A local run folder read back: run.json, questions.jsonl and each model's records.

``launcher collect`` brings an S3 run into this same layout, so scoring reads only local
folders. Loading a run reads manifests, not answers: each model's records are streamed by
``ModelData.iter_records`` when scoring asks for them, so memory does not grow with the
records' prompts (only what scoring keeps of them stays).

Where the records come from. ``responses.jsonl`` is assembled from ``records/NNNNNN.json`` at
the end of a model's run; a model still running, or killed, has records that are newer or
not in it yet. Every record is read once: a line of ``responses.jsonl`` is used unless the
record file of that question is newer than the file, differs from the line in size (both are
the same JSON, byte for byte, when nothing changed since), or the line is missing; then the
record file is read instead, exactly as the runner's ``ResponseRecord``. A torn record file (a
kill mid-write) falls back to its line, or counts as not answered.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.artefacts import jsonl
from runner.artefacts.keys import MANIFEST, RECORDS_DIR, RESPONSES, record_index
from runner.artefacts.records import ResponseRecord
from runner.errors import InputError, QuestionsError
from runner.questions import Question, load_questions


@dataclass
class ModelData:
    """One model's folder: its manifest, and its records on demand (keyed by 1-based index)."""

    model_dir: str
    manifest: dict[str, Any] = field(default_factory=dict)
    kind: str = "generate"
    path: Path | None = None
    _records: dict[int, dict[str, Any]] | None = field(default=None, repr=False)
    _loglik_seen: bool = field(default=False, repr=False)

    @property
    def records(self) -> dict[int, dict[str, Any]]:
        """Every record, read on first use and kept (the judge needs them all at once)."""
        if self._records is None:
            self._records = dict(self.iter_records())
        return self._records

    @property
    def scoring(self) -> str:
        """generate, loglikelihood or embed."""
        if self.kind == "embed":
            return "embed"
        params = self.manifest.get("parameters") or {}
        if params.get("scoring") == "loglikelihood" or self._loglik_seen:
            return "loglikelihood"
        if self._records is not None and any("option_loglikelihoods" in r for r in self._records.values()):
            return "loglikelihood"
        return "generate"

    def iter_records(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """``(index, record)`` for each record, once, from ``responses.jsonl`` and ``records/``.

        A later record of the same index replaces an earlier one for a caller that keys by
        index (a hand-edited file with a line twice: the last wins).
        """
        if self._records is not None:
            yield from self._records.items()
            return
        if self.path is None:
            return
        for index, rec in _stream(self.path):
            if "option_loglikelihoods" in rec:
                self._loglik_seen = True
            yield index, rec


def _record_files(folder: Path) -> dict[int, os.DirEntry]:
    try:
        entries = os.scandir(folder / RECORDS_DIR)
    except (FileNotFoundError, NotADirectoryError):
        return {}
    out = {}
    with entries:
        for e in entries:
            index = record_index(e.name)
            if index is not None and e.is_file():
                out[index] = e
    return out


def _record_from_file(entry: os.DirEntry) -> dict[str, Any] | None:
    try:
        rec = ResponseRecord.model_validate_json(Path(entry.path).read_bytes())
    except (OSError, ValueError):
        return None  # a torn or vanished record: not done, as the runner sees it
    return rec.model_dump(mode="json", exclude_none=True)


def _stream(folder: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    files = _record_files(folder)
    responses = folder / RESPONSES
    fallback: dict[int, dict[str, Any]] = {}
    try:
        f = responses.open("rb")
    except FileNotFoundError:
        f = None
    if f is not None:
        with f:
            written = os.fstat(f.fileno()).st_mtime_ns
            # Streamed, split on b"\n" only: answers hold U+2028 and U+2029 (runner.artefacts.jsonl).
            for lineno, line in jsonl.binary_lines(f):
                if not line.strip():
                    continue
                try:
                    rec = jsonl.loads(line, lineno)
                except jsonl.JSONLError as e:
                    raise InputError(f"{responses}:{lineno}: {e.message}") from None
                if not isinstance(rec, dict) or not isinstance(rec.get("index"), int):
                    continue
                index = rec["index"]
                entry = files.get(index)
                if entry is not None and (entry.stat().st_size != len(line)
                                          or entry.stat().st_mtime_ns > written):
                    fallback[index] = rec  # the record file is newer: read it below
                    continue
                files.pop(index, None)
                yield index, rec
    for index, entry in sorted(files.items()):
        rec = _record_from_file(entry)
        if rec is None:
            rec = fallback.get(index)
        if rec is not None:
            yield index, rec


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: cannot read: {e}") from None
    return data if isinstance(data, dict) else {}


@dataclass
class RunData:
    info: dict[str, Any]
    questions: list[Question]
    models: list[ModelData]
    path: Path | None = None


def load_run(run_dir: Path) -> RunData:
    """Read a local run folder's questions and manifests; ``InputError`` when it is not one."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: no such folder (expected a run folder with questions.jsonl)")
    qpath = run_dir / "questions.jsonl"
    if not qpath.is_file():
        raise InputError(
            f"{run_dir}: not a run folder (no questions.jsonl); give the folder <output>/<run-id>, "
            "or fetch it first with launcher collect"
        )
    try:
        questions = load_questions(qpath)
    except QuestionsError as e:
        raise InputError(str(e)) from None
    info = _read_json(run_dir / "run.json")
    order = [m.get("name") or m.get("id", "").replace("/", "_")
             for m in (info.get("config") or {}).get("models", []) if isinstance(m, dict)]
    models: list[ModelData] = []
    for sub in sorted(p for p in run_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        manifest = _read_json(sub / MANIFEST)
        has_answers = (sub / RESPONSES).is_file() or (sub / RECORDS_DIR).is_dir()
        if not manifest and not has_answers:
            continue  # report output, the cache, or another folder that is not a model
        kind = manifest.get("kind") or ("embed" if (sub / "embeddings.npy").is_file() else "generate")
        models.append(ModelData(model_dir=sub.name, manifest=manifest, kind=kind, path=sub))
    # The config's order, then any folder it does not name.
    rank = {name: i for i, name in enumerate(order)}
    models.sort(key=lambda m: (rank.get(m.model_dir, len(rank)), m.model_dir))
    return RunData(info=info, questions=questions, models=models, path=run_dir)
