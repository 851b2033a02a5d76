"""``launcher run``: every model of a config, locally, one after another.

The same ``runner.engine.model_run.ModelRun`` that a cluster pod uses, with rich progress bars.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from runner.artefacts.records import ModelManifest
from runner.artefacts.stored import stage_run
from runner.backends import backend_class
from runner.config import RunConfig
from runner.engine.model_run import ModelRun
from runner.plan import ModelTask, Plan, make_plan
from runner.storage import open_storage


class TokensPerSecond(ProgressColumn):
    def render(self, task) -> Text:
        rate = task.fields.get("tok_rate")
        return Text(f"{rate:,.1f} tok/s" if rate else "", style="cyan")


class RichProgress:
    """Adapts the runner's progress hooks to one rich bar per model."""

    def __init__(self, progress: Progress):
        self.p = progress
        self.task_id = TaskID(-1)
        self.tokens = 0
        self.t0 = 0.0

    def start(self, task: ModelTask, total: int, done: int) -> None:
        self.tokens, self.t0 = 0, time.perf_counter()
        self.task_id = self.p.add_task(task.model_dir, total=total, completed=done, tok_rate=None)

    def advance(self, n: int, tokens: int) -> None:
        self.tokens += tokens
        rate = self.tokens / max(time.perf_counter() - self.t0, 1e-9)
        self.p.update(self.task_id, advance=n, tok_rate=rate)

    def finish(self, manifest: ModelManifest) -> None:
        style = "green" if manifest.status == "complete" else "red"
        self.p.update(self.task_id, description=f"[{style}]{manifest.model_dir}")


def preflight(tasks: list[ModelTask]) -> None:
    for task in tasks:
        backend_class(task.spec.backend)(task).preflight()


def selected_tasks(plan: Plan, only: list[str] | None) -> list[ModelTask]:
    """The models ``--only`` names, in the file's order, each once; every model without it."""
    if not only:
        return list(plan.tasks)
    chosen = [plan.task(name) for name in only]
    return [t for t in plan.tasks if any(t is c for c in chosen)]


def run_local(cfg: RunConfig, *, only: list[str] | None = None, run_id: str | None = None,
              console: Console | None = None) -> tuple[Plan, list[ModelManifest]]:
    console = console or Console()
    # The run id and run.json still cover the whole file, so running the other models later
    # continues this same run; everything that concerns one model (its backend's checks, its
    # folder, its row in the summary) covers the selected ones only: a GPU-only model or a
    # missing API key elsewhere in the file must not block trying one model with --only.
    plan = make_plan(cfg, run_id=run_id)
    tasks = selected_tasks(plan, only)
    preflight(tasks)
    storage = open_storage(cfg.output, endpoint_url=cfg.cluster.s3_endpoint)
    stage_run(plan, storage)
    models = f"{len(tasks)} of {len(plan.tasks)} models" if only else f"{len(tasks)} models"
    console.print(f"run [bold]{plan.run_id}[/] → {storage.url}/{plan.run_id}  "
                  f"({len(plan.questions)} questions, {models})")
    manifests = []
    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
               MofNCompleteColumn(), TokensPerSecond(), TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=False) as progress:
        for task in tasks:
            manifests.append(ModelRun(plan, task, storage, progress=RichProgress(progress)).run())
    console.print(summary_table(manifests))
    for m in manifests:
        for w in m.warnings:
            console.print(f"[yellow]warning[/] {m.model_dir}: {w}")
        if m.error:
            console.print(f"[red]{m.model_dir}[/]: {m.error}", highlight=False)
    where = f"{storage.url.rstrip('/')}/{plan.run_id}"
    if storage.url.startswith("s3://"):
        console.print(f"next: launcher collect {plan.run_id} --from {storage.url}", highlight=False)
    else:
        console.print(f"next: launcher show {where} 1   |   launcher report {where}", highlight=False)
    return plan, manifests


def summary_table(manifests: list[ModelManifest]) -> Table:
    t = Table("model", "status", "answers", "errors", "tok/s", "elapsed", title="summary")
    for m in manifests:
        tp = m.throughput or {}
        style = "green" if m.status == "complete" else "red"
        t.add_row(
            m.model_dir,
            f"[{style}]{m.status}[/]",
            f"{m.done}/{m.total}",
            str(m.errors),
            f"{tp.get('output_tokens_per_s') or 0:,.1f}",
            f"{tp.get('elapsed_s', 0):.1f}s",
        )
    return t
