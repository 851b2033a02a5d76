"""How far a run has got, read from its storage alone (a local folder or S3).

The runner saves its model manifest at the start, after every batch and at the end, so the
manifests are the progress report: ``read_run`` reads run.json and one manifest per model
(one per shard for sharded models) and needs no cluster access. ``launcher status`` prints it;
the Kubernetes commands add Job states beside it.

A model's state:

    pending    nothing written yet (its Job has not started, or the local run not reached it)
    running    the runner said so last; a process killed without warning also stays here
    complete   every answer stored
    failed     the runner stopped with an error (the manifest's ``error`` says which)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from pydantic import ValidationError

from runner.artefacts.keys import Keys
from runner.artefacts.records import ModelState, RunInfo, combined_state
from runner.artefacts.stored import first_error, model_manifests, read_run_info
from runner.config import RunConfig
from runner.errors import InputError
from runner.storage import Storage


@dataclass
class ModelProgress:
    model_dir: str
    model: str
    backend: str
    state: ModelState
    done: int
    total: int
    errors: int
    elapsed_s: float | None
    started_at: str | None = None
    finished_at: str | None = None
    error: str | None = None
    shards: int = 1
    shards_started: int = 0
    #: seconds until the last answer at the pace so far (running models that answered something)
    eta_s: float | None = None


@dataclass
class RunProgress:
    run_id: str
    url: str
    name: str
    created_at: str
    n_questions: int
    models: list[ModelProgress]

    @property
    def finished(self) -> bool:
        """Every model complete or failed: nothing more will be written without a new attempt."""
        return all(m.state in ("complete", "failed") for m in self.models)

    def to_dict(self) -> dict:
        return asdict(self)


def run_config(info: RunInfo, where: str) -> RunConfig:
    try:
        return RunConfig.model_validate(info.config)
    except ValidationError as e:
        raise InputError(f"{where}: the run's config is not valid: {first_error(e)}") from None


def read_run(storage: Storage, run_id: str, now: datetime | None = None) -> RunProgress:
    """Every model's progress in run ``run_id``, from run.json and the manifests."""
    info = read_run_info(storage, run_id)
    cfg = run_config(info, f"{storage.url}/{Keys(run_id).run_json}")
    now = now or datetime.now(UTC)
    models = [
        _model_progress(storage, run_id, m.model_dir, m.id, m.backend, m.shards, info.n_questions, now)
        for m in cfg.models
    ]
    return RunProgress(run_id=run_id, url=storage.url, name=info.name, created_at=info.created_at,
                       n_questions=info.n_questions, models=models)


def _model_progress(storage: Storage, run_id: str, model_dir: str, model_id: str, backend: str,
                    shards: int, n_questions: int, now: datetime) -> ModelProgress:
    parts = model_manifests(storage, run_id, model_dir, shards)
    present = [p for p in parts if p is not None]
    progress = ModelProgress(model_dir=model_dir, model=model_id, backend=backend,
                             state=combined_state(parts, shards), done=0, total=n_questions, errors=0,
                             elapsed_s=None, shards=shards, shards_started=len(present))
    if not present:
        return progress
    progress.done = sum(p.done for p in present)
    progress.errors = sum(p.errors for p in present)
    starts = [p.started_at for p in present if p.started_at]
    ends = [p.finished_at for p in present if p.finished_at]
    progress.started_at = min(starts) if starts else None
    progress.finished_at = max(ends) if ends and progress.state != "running" else None
    errors = [p.error for p in present if p.error]
    progress.error = "; ".join(errors) or None
    if progress.started_at:
        end = _parse(progress.finished_at) if progress.finished_at else now
        progress.elapsed_s = max(0.0, (end - _parse(progress.started_at)).total_seconds())
    if progress.state == "running" and progress.done and progress.elapsed_s:
        progress.eta_s = progress.elapsed_s / progress.done * max(0, progress.total - progress.done)
    return progress


def _parse(stamp: str) -> datetime:
    t = datetime.fromisoformat(stamp)
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def format_elapsed(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
