"""``launcher run``: every model of a config, locally, one after another.

The same ``runner.engine.model_run.ModelRun`` that a cluster pod uses, with rich progress bars.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TaskID,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from runner.artefacts.records import ModelManifest
from runner.artefacts.stored import check_can_stage, stage_run
from runner.backends import backend_class
from runner.config import RunConfig
from runner.engine.model_run import ModelRun, model_leases
from runner.plan import ModelTask, Plan, make_plan
from runner.storage import Storage, open_storage, scheme_of
from runner.storage.lease import Leases, Owner

# Everything printed here that did not come from our own code (a model id, a run name, a
# folder, an error or a warning quoting a server) goes out as rich Text, never as markup: a
# "[/]" or "[bold]" in it must print as written, not crash the summary with a MarkupError.


class TokensPerSecond(ProgressColumn):
    def render(self, task) -> Text:
        rate = task.fields.get("tok_rate")
        return Text(f"{rate:,.1f} tok/s" if rate else "", style="cyan")


class ModelColumn(ProgressColumn):
    """The model's name, coloured by how it ended."""

    def render(self, task) -> Text:
        return Text(task.description, style=task.fields.get("style") or "")


class NoteColumn(ProgressColumn):
    """What the model is waiting for right now (a rate-limit pause, a long retry)."""

    def render(self, task) -> Text:
        return Text(task.fields.get("note") or "", style="yellow")


def progress_columns() -> list[ProgressColumn]:
    """One line per model: name, bar, answers, tokens a second, time, and what it waits for."""
    return [SpinnerColumn(), ModelColumn(), BarColumn(), MofNCompleteColumn(), TokensPerSecond(),
            TimeElapsedColumn(), NoteColumn()]


class RichProgress:
    """Adapts the runner's progress hooks to one rich bar per model."""

    def __init__(self, progress: Progress):
        self.p = progress
        self.task_id = TaskID(-1)
        self.tokens = 0
        self.t0 = 0.0

    def start(self, task: ModelTask, total: int, done: int) -> None:
        self.tokens, self.t0 = 0, time.perf_counter()
        self.task_id = self.p.add_task(task.model_dir, total=total, completed=done, tok_rate=None,
                                       note="", style="")

    def advance(self, n: int, tokens: int) -> None:
        self.tokens += tokens
        rate = self.tokens / max(time.perf_counter() - self.t0, 1e-9)
        self.p.update(self.task_id, advance=n, tok_rate=rate)

    def note(self, text: str) -> None:
        self.p.update(self.task_id, note=text)

    def finish(self, manifest: ModelManifest) -> None:
        style = "green" if manifest.status == "complete" else "red"
        self.p.update(self.task_id, style=style, note="")


def preflight(tasks: list[ModelTask]) -> None:
    for task in tasks:
        backend_class(task.spec.backend)(task).preflight()


def selected_tasks(plan: Plan, only: list[str] | None) -> list[ModelTask]:
    """The models ``--only`` names, in the file's order, each once; every model without it."""
    if not only:
        return list(plan.tasks)
    chosen = [plan.task(name) for name in only]
    return [t for t in plan.tasks if any(t is c for c in chosen)]


def take_leases(plan: Plan, tasks: list[ModelTask], storage: Storage, *, wait: bool,
                console: Console) -> Leases:
    """Every selected model's lease (all its shards), before anything is written.

    Held by another process: ``LeaseHeld`` naming it (exit 1), or with ``wait`` a line saying
    whom we wait for, then the run goes on once they are done (finding their answers stored).
    """
    leases = model_leases(storage, plan, [(t, list(range(t.spec.shards))) for t in tasks],
                          command="launcher run")

    def waiting(what: str, holder: Owner | None) -> None:
        who = holder.describe() if holder else "another process"
        console.print(Text(f"waiting: {what} is being run by {who}; this run starts when it is done"),
                      highlight=False, soft_wrap=True)

    leases.acquire(wait=wait, on_wait=waiting,
                   hint="wait for it with --wait, or give this run another --run-id")
    return leases


def remember(run_id: str, url: str, endpoint: str | None, console: Console) -> None:
    """Note where the run went, so its id alone finds it from any folder (``launcher.locate``);
    a cache that cannot be written costs a warning, never the run."""
    from launcher import runindex

    if not scheme_of(url).remote:
        url = str(Path(url).resolve())
    try:
        runindex.record(runindex.RunEntry(run_id=run_id, output=url, endpoint=endpoint, submitted=False))
    except OSError as e:
        console.print(Text.assemble(("warning", "yellow"), f" could not remember run {run_id} in "
                                    f"{runindex.index_path()} ({e}); pass --from to status and collect"))


def run_local(cfg: RunConfig, *, only: list[str] | None = None, run_id: str | None = None,
              console: Console | None = None, wait: bool = False) -> tuple[Plan, list[ModelManifest]]:
    console = console or Console()
    # The run id and run.json still cover the whole file, so running the other models later
    # continues this same run; everything that concerns one model (its backend's checks, its
    # folder, its row in the summary) covers the selected ones only: a GPU-only model or a
    # missing API key elsewhere in the file must not block trying one model with --only.
    plan = make_plan(cfg, run_id=run_id)
    tasks = selected_tasks(plan, only)
    preflight(tasks)
    scheme = scheme_of(cfg.output)
    endpoint = scheme.endpoint(cfg.cluster)
    storage = open_storage(cfg.output, endpoint_url=endpoint)
    check_can_stage(plan, storage)  # a run refused for its input is not kept waiting first
    leases = take_leases(plan, tasks, storage, wait=wait, console=console)
    try:
        stage_run(plan, storage)
    except BaseException:
        leases.release()
        raise
    remember(plan.run_id, storage.url, endpoint, console)
    models = f"{len(tasks)} of {len(plan.tasks)} models" if only else f"{len(tasks)} models"
    console.print(Text.assemble("run ", (plan.run_id, "bold"), f" → {storage.url}/{plan.run_id}  "
                                f"({len(plan.questions)} questions, {models})"))
    manifests = []
    with leases, Progress(*progress_columns(), console=console, transient=False) as progress:
        for task in tasks:
            manifests.append(ModelRun(plan, task, storage, progress=RichProgress(progress),
                                      lease=leases).run())
    console.print(summary_table(manifests))
    for m in manifests:
        for w in m.warnings:
            console.print(Text.assemble(("warning", "yellow"), f" {m.model_dir}: {w}"), highlight=False)
        if m.error:
            console.print(Text.assemble((m.model_dir, "red"), f": {m.error}"), highlight=False)
    where = f"{storage.url.rstrip('/')}/{plan.run_id}"
    # soft_wrap: the terminal wraps a long command, so that it copies and pastes whole.
    if scheme.remote:
        flags = f" --endpoint {endpoint}" if endpoint else ""
        console.print(f"next: launcher collect {plan.run_id} --from {storage.url}{flags}", markup=False,
                      highlight=False, soft_wrap=True)
    else:
        console.print(f"next: launcher show {where} 1   |   launcher report {where}", markup=False,
                      highlight=False, soft_wrap=True)
    return plan, manifests


def summary_table(manifests: list[ModelManifest]) -> Table:
    t = Table("model", "status", "answers", "errors", "tok/s", "elapsed", title="summary")
    for m in manifests:
        tp = m.throughput or {}
        style = "green" if m.status == "complete" else "red"
        t.add_row(
            Text(m.model_dir),
            Text(m.status, style=style),
            f"{m.done}/{m.total}",
            str(m.errors),
            f"{tp.get('output_tokens_per_s') or 0:,.1f}",
            f"{tp.get('elapsed_s', 0):.1f}s",
        )
    return t
