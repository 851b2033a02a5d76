"""``launcher report``: a run folder → report.html, metrics.csv and metrics.json.

The numbers come from ``launcher.scoring`` (one dict, see ``compute_metrics``); this package
only lays them out. Judge verdicts stored under ``<run>/judge/`` are added when present.
Each file is written to a temporary name and renamed, so a report that fails leaves the
previous one whole. metrics.json holds one question per line under ``items`` (thousands of
answers stay quick to write and to diff) and indents the rest.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from runner.errors import InputError, StorageError

REPORT_HTML = "report.html"
METRICS_CSV = "metrics.csv"
METRICS_JSON = "metrics.json"


@dataclass
class ReportFiles:
    html: Path
    csv: Path
    json: Path
    metrics: dict


def _judge_columns(rows: list[dict], judges) -> None:
    """One CSV column per judge and criterion, e.g. ``judge:gpt-4o:accuracy``."""
    for j in judges:
        for row in rows:
            s = j.summary.get(row.get("model_dir"), {})
            for c in j.criteria:
                mean = (s.get("means") or {}).get(c)
                row[f"judge:{j.judge_model}:{c}"] = None if mean is None else round(mean, 4)


def _csv_text(rows: list[dict]) -> str:
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buf.getvalue()


def _finite(obj):
    """NaN and infinity are not JSON: they become null (an undefined statistic)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def _dump_metrics(obj: dict[str, Any], f: TextIO) -> None:
    """Indented JSON, except one compact line per item (the C encoder: fast at scale)."""
    f.write("{")
    for n, (key, value) in enumerate(obj.items()):
        f.write(("," if n else "") + "\n  " + json.dumps(key) + ": ")
        if key == "items" and isinstance(value, list) and value:
            f.write("[")
            for i, item in enumerate(value):
                f.write(("," if i else "") + "\n    ")
                f.write(json.dumps(item, ensure_ascii=False, allow_nan=False, default=str))
            f.write("\n  ]")
        else:
            text = json.dumps(value, indent=2, ensure_ascii=False, allow_nan=False, default=str)
            f.write(text.replace("\n", "\n  "))
    f.write("\n}\n")


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    """metrics.json, streamed into a temporary file that then replaces the old one.

    The temporary file is the storage layer's (``replacing``, as ``atomic_write`` uses): it
    gets the umask like every other file of the run, where ``mkstemp`` would make it 0600.
    """
    from runner.storage import replacing

    try:
        with replacing(path) as tmp, tmp.open("w", encoding="utf-8") as f:
            _dump_metrics(obj, f)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise StorageError(f"cannot write {path}: {e.strerror or e}") from e


def _write(path: Path, text: str) -> None:
    from runner.storage import atomic_write

    try:
        atomic_write(path, text.encode("utf-8"))
    except OSError as e:
        raise StorageError(f"cannot write {path}: {e.strerror or e}") from e


def build_report(run_dir: Path, out_dir: Path | None = None, *, encoder: str | None = "minilm",
                 bootstrap: int = 1000, seed: int = 0) -> ReportFiles:
    """Score the run in ``run_dir`` and write the three report files into ``out_dir``.

    Nothing is written when the folder is not a run (``InputError``).
    """
    from launcher.judge import load_judges
    from launcher.report.html import render_html
    from launcher.scoring.metrics import compute_metrics, metrics_table_rows
    from launcher.scoring.run_data import load_run

    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"-o {out_dir}: exists and is not a folder")
    run = load_run(run_dir)
    metrics = compute_metrics(run, similarity_encoder=encoder, bootstrap=bootstrap, seed=seed)
    judges = load_judges(run_dir)
    parameters = {m.model_dir: (m.manifest or {}).get("parameters") or {} for m in run.models}
    html = render_html(metrics, parameters=parameters, judges=judges)

    rows = metrics_table_rows(metrics)
    _judge_columns(rows, judges)
    full = dict(metrics)
    full["judges"] = [
        {"judge_model": j.judge_model, "criteria": list(j.criteria), "summary": j.summary,
         "verdicts": j.n_verdicts, "failed": j.n_errors}
        for j in judges
    ]
    files = ReportFiles(out_dir / REPORT_HTML, out_dir / METRICS_CSV, out_dir / METRICS_JSON, full)
    _write_json(files.json, _finite(full))
    _write(files.csv, _csv_text(rows))
    _write(files.html, html)
    return files
