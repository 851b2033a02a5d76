"""``launcher status RUN``: how far each model of a run has got, and how its Jobs are doing.

The run id alone is enough: ``launcher.locate`` finds where it is stored (``--from`` overrides).
Progress is read from storage, so it works for local runs too; for a run submitted to a cluster
each model's Job state and the reason its pods give (Unschedulable, ImagePullBackOff, OOMKilled)
sit beside it. ``--watch`` redraws the table until every model has finished.

Everything shown that did not come from our own code (model names, pod messages, stored errors)
is printed as plain text: a ``[/]`` in a pod message must not be read as markup.
"""

from __future__ import annotations

import json
import time

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from launcher.locate import RunLocation, locate
from launcher.runstate import RunProgress, format_elapsed, read_run
from runner import config as runner_config
from runner.errors import ClusterError, InputError
from runner.storage import expected_outputs, open_storage

STATE_STYLE = {"pending": "dim", "running": "yellow", "complete": "green", "failed": "red"}
JOB_DONE = ("complete", "failed")
DEFAULT_WATCH_INTERVAL = 10.0


def register(sub) -> None:
    p = sub.add_parser("status", help="progress of a run: Job state, pod reasons, answers done, ETA")
    p.add_argument("run", help="the run id (printed by `launcher run` / `launcher submit`)")
    add_source_arguments(p)
    p.add_argument("--json", action="store_true", help="print the progress as JSON")
    p.add_argument("--jobs", action="store_true",
                   help="require each model's Kubernetes Job state (shown anyway for a run submitted from "
                        "here; implied by -n/--context/--kubeconfig)")
    p.add_argument("--watch", action="store_true", help="redraw the table until every model has finished")
    p.add_argument("--interval", type=float, default=DEFAULT_WATCH_INTERVAL, metavar="SECONDS",
                   help=f"seconds between redraws with --watch (default {DEFAULT_WATCH_INTERVAL:g})")
    from launcher.commands.cluster import add_cluster_args

    add_cluster_args(p)
    p.set_defaults(func=cmd_status)


def add_source_arguments(p) -> None:
    """--from and --endpoint, shared with ``launcher collect``."""
    p.add_argument("--from", dest="source", metavar="OUTPUT",
                   help=f"where the run lives: {expected_outputs()} (default: found from the run "
                   "id: the runs submitted from here, $MEDBENCH_OUTPUT or ./results, the run's Jobs)")
    p.add_argument("--endpoint", metavar="URL",
                   help="the store's endpoint (an S3 one at MinIO, Ceph); default the run's, else "
                   "$AWS_ENDPOINT_URL_S3 / $AWS_ENDPOINT_URL")


def source_url(args) -> str:
    """Where run ``args.run`` is stored. Also fills ``args.endpoint`` from the run's location when it
    was not given, so a caller that opens ``open_storage(source_url(args), endpoint_url=args.endpoint)``
    (``launcher collect``) reaches the run by its id alone."""
    loc = locate(check_run_id(args.run), source=args.source, endpoint=args.endpoint,
                 namespace=getattr(args, "namespace", None), context=getattr(args, "context", None),
                 kubeconfig=getattr(args, "kubeconfig", None))
    if args.endpoint is None:
        args.endpoint = loc.endpoint
    return loc.output


def check_run_id(run_id: str) -> str:
    try:
        return runner_config.check_run_id(run_id)
    except ValueError as e:
        hint = "; pass the output prefix with --from" if "'/'" in str(e) else ""
        raise InputError(f"{e}{hint}") from None


def _styled(text: str, style: str | None = None) -> Text:
    return Text(text, style=style or "")


def build_table(progress: RunProgress, job_states: dict[str, str] | None = None) -> Table:
    """One row per model. ``job_states`` (model_dir -> Job state) adds a "job" column."""
    table = Table(title=Text(f"{progress.run_id}  ({progress.url})"), title_justify="left")
    table.add_column("model")
    if job_states is not None:
        table.add_column("job", overflow="fold")
    table.add_column("state")
    table.add_column("answers", justify="right")
    table.add_column("errors", justify="right")
    table.add_column("elapsed", justify="right")
    table.add_column("ETA", justify="right")
    notes = any(m.error or m.shards > 1 for m in progress.models)
    if notes:
        table.add_column("note", overflow="fold")
    for m in progress.models:
        row = [Text(m.model_dir)]
        if job_states is not None:
            row.append(Text(job_states.get(m.model_dir, "-")))
        row += [
            _styled(m.state, STATE_STYLE[m.state]),
            Text(f"{m.done}/{m.total}"),
            _styled(str(m.errors), "red") if m.errors else Text("0"),
            Text(format_elapsed(m.elapsed_s)),
            Text(format_elapsed(m.eta_s)),
        ]
        if notes:
            note = f"{m.shards_started}/{m.shards} shards started" if m.shards > 1 else ""
            if m.error:
                note = f"{note}; {m.error}" if note else m.error
            row.append(Text(note))
        table.add_row(*row)
    return table


def _job_states(loc: RunLocation, required: bool) -> tuple[dict[str, str] | None, str | None]:
    """The run's Job states, or (when not required) None and a note saying why they are missing."""
    from launcher.k8s.client import job_states

    try:
        return job_states(loc.run_id, loc.namespace, kubeconfig=loc.kubeconfig, context=loc.context), None
    except ClusterError as e:
        if required:
            raise
        return None, f"Job states not shown: {e}"


def _snapshot(loc: RunLocation, storage, want_jobs: bool, jobs_required: bool):
    progress = read_run(storage, loc.run_id)
    states, note = _job_states(loc, jobs_required) if want_jobs else (None, None)
    if states:
        settle_failed_jobs(progress, states)
    return progress, states, note


def settle_failed_jobs(progress: RunProgress, states: dict[str, str]) -> None:
    """A model whose Job failed has failed, even if storage never heard of it: a pod that is
    OOMKilled, or goes with its node, writes nothing, so its model would show ``pending`` or
    ``running`` for ever (and ``--watch`` would never end)."""
    for m in progress.models:
        if states.get(m.model_dir, "").split(":")[0] == "failed" and m.state in ("pending", "running"):
            m.state, m.eta_s = "failed", None
            m.error = m.error or (f"its Job failed before the runner could record why: "
                                  f"launcher logs {progress.run_id} {m.model_dir}")


def _render(progress: RunProgress, states: dict[str, str] | None, note: str | None) -> Table:
    table = build_table(progress, states)
    done = sum(m.done for m in progress.models)
    total = sum(m.total for m in progress.models)
    caption = f"{done}/{total} answers stored across {len(progress.models)} model(s)"
    if note:
        caption += f"\n{note}"
    table.caption = Text(caption)
    table.caption_justify = "left"
    return table


def _finished(progress: RunProgress, states: dict[str, str] | None) -> bool:
    if not progress.finished:
        return False
    return states is None or all(s.split(":")[0] in JOB_DONE for s in states.values())


def cmd_status(args) -> int:
    run_id = check_run_id(args.run)
    loc = locate(run_id, source=args.source, endpoint=args.endpoint, namespace=args.namespace,
                 context=args.context, kubeconfig=args.kubeconfig)
    storage = open_storage(loc.output, endpoint_url=loc.endpoint)
    jobs_required = bool(args.jobs or args.namespace or args.context or args.kubeconfig)
    want_jobs = jobs_required or loc.submitted
    progress, states, note = _snapshot(loc, storage, want_jobs, jobs_required)
    if args.json:
        data = progress.to_dict()
        if states is not None:
            data["jobs"] = states
        if note:
            data["note"] = note
        print(json.dumps(data, indent=2))
        return 0
    console = Console(highlight=False)
    if not args.watch:
        console.print(_render(progress, states, note))
        return 0
    with Live(_render(progress, states, note), console=console, auto_refresh=False) as live:
        while not _finished(progress, states):
            time.sleep(max(0.0, args.interval))
            progress, states, note = _snapshot(loc, storage, want_jobs, jobs_required)
            live.update(_render(progress, states, note), refresh=True)
    return 0
