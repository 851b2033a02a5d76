"""``launcher status RUN``: how far each model of a run has got, read from storage.

Works the same for a local folder and for S3, with no cluster access. The Kubernetes
commands pass ``job_states`` to ``build_table`` to add a Job column beside the stored state.
"""

from __future__ import annotations

import json
import os

from rich.console import Console
from rich.table import Table

from launcher.runstate import RunProgress, format_elapsed, read_run
from runner import config as runner_config
from runner.errors import InputError
from runner.storage import open_storage

STATE_STYLE = {"pending": "dim", "running": "yellow", "complete": "green", "failed": "red"}


def register(sub) -> None:
    p = sub.add_parser("status", help="progress of a run (answers done, errors, elapsed) from its storage")
    p.add_argument("run", help="the run id (printed by `launcher run` / `launcher submit`)")
    add_source_arguments(p)
    p.add_argument("--json", action="store_true", help="print the progress as JSON")
    p.add_argument("--jobs", action="store_true",
                   help="add each model's Kubernetes Job state and pod reason (needs cluster access; "
                        "implied by -n/--context/--kubeconfig)")
    from launcher.commands.cluster import add_cluster_args

    add_cluster_args(p)
    p.set_defaults(func=cmd_status)


def add_source_arguments(p) -> None:
    """--from and --endpoint, shared with ``launcher collect``."""
    p.add_argument("--from", dest="source", metavar="OUTPUT",
                   help="where the run lives: s3://bucket/prefix or a folder "
                   "(default: $MEDBENCH_OUTPUT, else ./results)")
    p.add_argument("--endpoint", metavar="URL",
                   help="S3 endpoint (MinIO, Ceph); default $AWS_ENDPOINT_URL_S3 / $AWS_ENDPOINT_URL")


def source_url(args) -> str:
    return args.source or os.environ.get("MEDBENCH_OUTPUT") or "results"


def check_run_id(run_id: str) -> str:
    try:
        return runner_config.check_run_id(run_id)
    except ValueError as e:
        hint = "; pass the output prefix with --from" if "'/'" in str(e) else ""
        raise InputError(f"{e}{hint}") from None


def build_table(progress: RunProgress, job_states: dict[str, str] | None = None) -> Table:
    """One row per model. ``job_states`` (model_dir -> Job state) adds a "job" column."""
    table = Table(title=f"{progress.run_id}  ({progress.url})", title_justify="left")
    table.add_column("model")
    if job_states is not None:
        table.add_column("job")
    table.add_column("state")
    table.add_column("answers", justify="right")
    table.add_column("errors", justify="right")
    table.add_column("elapsed", justify="right")
    notes = any(m.error or m.shards > 1 for m in progress.models)
    if notes:
        table.add_column("note", overflow="fold")
    for m in progress.models:
        row = [m.model_dir]
        if job_states is not None:
            row.append(job_states.get(m.model_dir, "-"))
        row += [
            f"[{STATE_STYLE[m.state]}]{m.state}[/]",
            f"{m.done}/{m.total}",
            f"[red]{m.errors}[/]" if m.errors else "0",
            format_elapsed(m.elapsed_s),
        ]
        if notes:
            note = f"{m.shards_started}/{m.shards} shards started" if m.shards > 1 else ""
            if m.error:
                note = f"{note}; {m.error}" if note else m.error
            row.append(note)
        table.add_row(*row)
    return table


def cmd_status(args) -> int:
    storage = open_storage(source_url(args), endpoint_url=args.endpoint)
    progress = read_run(storage, check_run_id(args.run))
    states = None
    if args.jobs or args.namespace or args.context or args.kubeconfig:
        from launcher.k8s.client import job_states

        states = job_states(progress.run_id, args.namespace, kubeconfig=args.kubeconfig,
                            context=args.context)
    console = Console()
    if args.json:
        data = progress.to_dict()
        if states is not None:
            data["jobs"] = states
        print(json.dumps(data, indent=2))
        return 0
    # Pod messages may hold '[...]', which rich would read as markup.
    from rich.markup import escape

    shown = None if states is None else {k: escape(v) for k, v in states.items()}
    console.print(build_table(progress, shown))
    done = sum(m.done for m in progress.models)
    total = sum(m.total for m in progress.models)
    console.print(f"{done}/{total} answers stored across {len(progress.models)} model(s)", highlight=False)
    return 0
