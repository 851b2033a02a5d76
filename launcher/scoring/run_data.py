"""A local run folder read back: run.json, questions.jsonl and each model's records.

``launcher collect`` brings an S3 run into this same layout, so scoring reads only local
folders. Records come from ``responses.jsonl``; a model that was killed before assembling it
is read from its ``records/`` folder instead, so a partial run can still be scored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.artefacts.keys import Keys
from runner.artefacts.stored import read_records
from runner.errors import InputError, QuestionsError
from runner.questions import Question, load_questions
from runner.storage import LocalStorage


@dataclass
class ModelData:
    """One model's folder: its manifest and its records keyed by 1-based question index."""

    model_dir: str
    manifest: dict[str, Any] = field(default_factory=dict)
    records: dict[int, dict[str, Any]] = field(default_factory=dict)
    kind: str = "generate"
    path: Path | None = None

    @property
    def scoring(self) -> str:
        """generate, loglikelihood or embed."""
        if self.kind == "embed":
            return "embed"
        params = self.manifest.get("parameters") or {}
        if params.get("scoring") == "loglikelihood":
            return "loglikelihood"
        if any("option_loglikelihoods" in r for r in self.records.values()):
            return "loglikelihood"
        return "generate"


@dataclass
class RunData:
    info: dict[str, Any]
    questions: list[Question]
    models: list[ModelData]
    path: Path | None = None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: cannot read: {e}") from None
    return data if isinstance(data, dict) else {}


def _read_records(folder: Path) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    responses = folder / "responses.jsonl"
    if responses.is_file():
        for lineno, line in enumerate(responses.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{responses}:{lineno}: not valid JSON: {e.msg}") from None
            if isinstance(rec, dict) and isinstance(rec.get("index"), int):
                out[rec["index"]] = rec
    # Records written after responses.jsonl was last assembled (a run still going, or killed)
    # are newer; they win. Read exactly as the runner reads them to decide what is done.
    newer = read_records(LocalStorage(folder.parent.parent), Keys(folder.parent.name, folder.name))
    out.update({i: r.model_dump(mode="json", exclude_none=True) for i, r in newer.items()})
    return out


def load_run(run_dir: Path) -> RunData:
    """Read a local run folder; ``InputError`` when it is not one."""
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
    for sub in sorted(p for p in run_dir.iterdir() if p.is_dir()):
        manifest = _read_json(sub / "manifest.json")
        has_answers = (sub / "responses.jsonl").is_file() or (sub / "records").is_dir()
        if not manifest and not has_answers:
            continue  # report output or another folder that is not a model
        records = _read_records(sub)
        kind = manifest.get("kind") or ("embed" if (sub / "embeddings.npy").is_file() else "generate")
        models.append(ModelData(model_dir=sub.name, manifest=manifest, records=records, kind=kind,
                                path=sub))
    # The config's order, then any folder it does not name.
    rank = {name: i for i, name in enumerate(order)}
    models.sort(key=lambda m: (rank.get(m.model_dir, len(rank)), m.model_dir))
    return RunData(info=info, questions=questions, models=models, path=run_dir)
