"""``load_benchmark(source, base_dir)``: a named benchmark as our questions, plus where they came from."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from runner.benchmarks.catalogue import Benchmark
from runner.benchmarks.errors import SchemaChanged
from runner.benchmarks.rows import Loaded, load_hub, load_local
from runner.benchmarks.sampling import sample_rows
from runner.benchmarks.source import BenchmarkSource, check_split, check_subject, find_benchmark
from runner.questions import Question


def question_id(bench: Benchmark, subject: str | None, split: str, row: int) -> str:
    """``medqa-test-17``: the benchmark, split and 0-based row (lm-eval's doc_id) of the pinned data."""
    return f"{bench.id_prefix(subject)}-{split}-{row}"


def _where(bench: Benchmark, loaded: Loaded, split: str) -> str:
    rev = f"@{loaded.revision[:7]}" if loaded.revision else ""
    origin = f"{bench.dataset}{rev}" if loaded.source == "hub" else "local copy"
    return f"{bench.name} ({origin}) split {split}"


def _check_columns(bench: Benchmark, loaded: Loaded, split: str) -> None:
    have = list(loaded.rows.column_names)
    missing = [c for c in bench.schema.columns if c not in have]
    if missing:
        raise SchemaChanged(
            f"{_where(bench, loaded, split)}: schema changed: missing column(s) {', '.join(missing)} "
            f"(has: {', '.join(have)}); medbench maps {', '.join(bench.schema.columns)}"
        )


def to_question(bench: Benchmark, subject: str | None, split: str, row: int, values: dict[str, Any],
                index: int) -> Question:
    fields = bench.schema.to_fields(values)
    meta = {"benchmark": bench.name, **({"subject": subject} if subject else {}), "split": split,
            "row": row, **{k: v for k, v in (fields.pop("meta", None) or {}).items() if v is not None}}
    q = Question(id=question_id(bench, subject, split, row), meta=meta, **fields)
    q.index = index
    return q


def load_benchmark(source: BenchmarkSource, base_dir: Path) -> tuple[list[Question], dict[str, Any]]:
    """The questions of ``source`` (sampled, with stable ids) and its provenance for run.json.

    Raises ``BenchmarkError`` subclasses (``InputError``, exit 2) with one line each.
    """
    bench = find_benchmark(source.benchmark)
    subject, split = source.subject, source.resolved_split
    check_subject(bench, subject)
    check_split(bench, subject, split)
    if source.path is not None:
        path = Path(source.path).expanduser()
        loaded = load_local(bench, subject, split, path if path.is_absolute() else base_dir / path)
    else:
        loaded = load_hub(bench, subject, split, source.revision or bench.revision,
                          requested=source.revision is not None)
    _check_columns(bench, loaded, split)

    n = len(loaded.rows)
    rows = sample_rows(n, source.limit, source.seed)
    selected = loaded.rows.select(rows) if len(rows) < n else loaded.rows
    questions = []
    for index, (row, values) in enumerate(zip(rows, selected, strict=True), start=1):
        try:
            questions.append(to_question(bench, subject, split, row, values, index))
        except (ValueError, ValidationError) as e:
            reason = e.errors()[0]["msg"] if isinstance(e, ValidationError) else str(e)
            where = _where(bench, loaded, split)
            raise SchemaChanged(f"{where} row {row}: schema changed: {reason}") from None
    if not questions:
        raise SchemaChanged(f"{_where(bench, loaded, split)}: the split is empty")

    ll = bench.loglikelihood(subject)
    provenance = {
        "benchmark": bench.name,
        "title": bench.title,
        "subject": subject,
        "split": split,
        "dataset": bench.dataset,
        "config": bench.config_for(subject),
        "data_dir": bench.data_dir,
        "source": loaded.source,
        "path": str(source.path) if source.path is not None else None,
        "pinned_revision": source.revision or bench.revision,
        "revision": loaded.revision,
        "files_sha256": loaded.files_sha256,
        "license": bench.license,
        "lm_eval_task": bench.task_for(subject),
        "rows_in_split": n,
        "limit": source.limit,
        "seed": source.seed,
        "n_questions": len(questions),
        "loglikelihood": {"prompt_template": ll.prompt_template, "continuations": ll.continuations,
                          "target_delimiter": ll.target_delimiter},
        "instruction_template": bench.instruction_template(subject),
    }
    return questions, provenance


# What identifies the data of a run: not where a local copy lay (another machine, same files,
# same run), but which dataset, revision or file bytes, split and sample.
_IDENTITY = ("benchmark", "subject", "split", "dataset", "config", "data_dir", "revision", "files_sha256",
             "limit", "seed")


def source_fingerprint(provenance: dict[str, Any]) -> str:
    """A digest of the provenance fields that identify the items, for the run id."""
    blob = json.dumps({k: provenance.get(k) for k in _IDENTITY}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
