"""``launcher plan models.yaml``: what a run will ask of the cluster and cost, before it runs.

Per model: the Job's GPUs, CPU and memory (sized as ``render`` sizes them), the input and output
tokens, the time and GPU-hours, the API cost; then the totals. Every figure is an estimate and
says what it rests on (``launcher.estimate``). ``submit --dry-run`` prints the same table.
"""

from __future__ import annotations

import json

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from launcher.estimate import ModelEstimate, PlanEstimate, estimate
from launcher.k8s.sizing import JobSize
from launcher.runstate import format_elapsed
from runner.config import load_config
from runner.plan import Plan

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def register(sub) -> None:
    p = sub.add_parser("plan", help="before a run: each model's Job resources, tokens, GPU-hours and cost")
    p.add_argument("config", help="models.yaml")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument("--no-history", action="store_true",
                   help="do not read earlier runs in the output storage for measured token counts and speeds")
    p.set_defaults(func=cmd_plan)


def cmd_plan(args) -> int:
    from launcher.k8s.sizing import size_plan
    from runner.plan import make_plan

    plan = make_plan(load_config(args.config))
    sizes = size_plan(plan)
    est = estimate(plan, sizes, use_history=not args.no_history)
    if args.json:
        print(json.dumps(est.to_dict(), indent=2))
        return 0
    print_sizes(plan, sizes, all_lines=False)
    print_plan(est)
    return 0


def print_sizes(plan: Plan, sizes: dict[str, JobSize], *, all_lines: bool) -> None:
    """Each sized model's figures and where they came from (stderr: stdout may be YAML); warnings
    always. Model ids and notes are printed as text, never read as markup."""
    for task in plan.tasks:
        size = sizes[task.model_dir]
        if all_lines and size.summary:
            err_console.print(Text("sizing: ", style="dim") + Text(f"{task.model_dir}: {size.summary}"))
        for w in size.warnings:
            err_console.print(Text("warning: ", style="yellow") + Text(w))


def _tokens(n: int, mark: str) -> Text:
    return Text(f"{mark}{n:,}")


def _hours(h: float, style: str = "") -> Text:
    if not h:
        return Text("-", style="dim")
    return Text("<0.01" if h < 0.005 else f"{h:.2f}", style=style)


def _cost(m: ModelEstimate) -> Text:
    if m.api_cost is not None:
        return Text(f"${m.api_cost:,.2f}")
    if m.gpu_cost is not None:
        return Text(f"${m.gpu_cost:,.2f} GPU")
    if m.price_basis == "unpriced":
        return Text("?", style="yellow")
    return Text("-", style="dim")


def plan_table(est: PlanEstimate) -> Table:
    table = Table(title=Text(f"{est.run_id}: {est.questions} questions, max_new_tokens {est.max_new_tokens} "
                             "(estimates)"), title_justify="left", box=box.SIMPLE_HEAD)
    # On a narrow terminal (or 80 columns when piped) the model and job columns fold onto more
    # lines; the figures never do, and no column is squeezed out of sight.
    table.add_column("model", overflow="fold", min_width=16)
    table.add_column("job", overflow="fold", min_width=12)
    for name in ("input tokens", "output tokens", "time", "GPU-hours", "cost"):
        table.add_column(name, justify="right", no_wrap=True)
    for m in est.models:
        out_mark = "≤" if m.output_basis == "max_new_tokens" else ""
        table.add_row(
            Text(m.model),
            Text(m.job),
            _tokens(m.input_tokens, "" if m.input_exact else "≈"),
            _tokens(m.output_tokens, out_mark) if m.output_basis else Text("-", style="dim"),
            Text(format_elapsed(m.seconds)) if m.seconds is not None else Text("?", style="yellow"),
            _hours(m.gpu_hours),
            _cost(m),
        )
    total_cost = est.api_cost + (est.gpu_cost or 0.0)
    cost = f"${total_cost:,.2f}" + ("" if not est.unpriced else " + ?")
    # The Jobs run side by side where the cluster has room: the run takes as long as its longest.
    longest = max((m.seconds for m in est.models if m.seconds is not None), default=None)
    table.add_section()
    table.add_row(Text("total", style="bold"), Text(""), _tokens(sum(m.input_tokens for m in est.models), ""),
                  _tokens(sum(m.output_tokens for m in est.models), ""),
                  Text(format_elapsed(longest)) if longest is not None else Text(""),
                  _hours(est.gpu_hours, style="bold"), Text(cost, style="bold"))
    return table


def _names(models: list[ModelEstimate]) -> str:
    return ", ".join(m.model for m in models)


def _time_notes(est: PlanEstimate) -> list[str]:
    """What each model's time rests on, named: a table, a measurement, the user's figure."""
    notes = []
    by_table: dict[str, list[ModelEstimate]] = {}
    for m in est.models:
        if m.speed_from == "table":
            by_table.setdefault(m.speed_table, []).append(m)
    for table, models in by_table.items():
        notes.append(f"time and GPU-hours of {_names(models)}: the speed table of {table} "
                     f"(docs/kubernetes.md), scaled to the Job's GPU type; set cluster.throughput to "
                     "your own measurement, or let a run on the same hardware measure it")
    for m in est.models:
        if m.speed_from == "measured":
            notes.append(f"time of {m.model}: {m.speed_basis}")
    users = [m for m in est.models if m.speed_from == "cluster.throughput"]
    if users:
        notes.append(f"time of {_names(users)}: your cluster.throughput")
    apis = [m for m in est.models if m.speed_from == "api"]
    if apis:
        notes.append(f"time of {_names(apis)}: ~1 s a request plus 50 output tokens a second, "
                     "concurrency requests at a time")
    if sum(1 for m in est.models if m.seconds) > 1:
        notes.append("the total time is the longest Job's, as the Jobs run side by side")
    return notes


def plan_notes(est: PlanEstimate) -> list[str]:
    notes = []
    if any(not m.input_exact for m in est.models):
        notes.append("≈ input tokens approximated at 4 characters a token where no tokenizer is cached")
    if any(m.output_basis == "max_new_tokens" for m in est.models):
        notes.append("≤ output tokens: max_new_tokens for every answer, an upper bound (measured averages "
                     "are used once a run of the same model and settings is in the output storage)")
    measured = sorted({m.output_basis for m in est.models if m.output_basis.startswith("measured")})
    notes += [f"output tokens {b}" for b in measured]
    notes += _time_notes(est)
    if est.price_tables:
        by_date: dict[str, list[str]] = {}
        for t in est.price_tables:
            by_date.setdefault(t["as_of"], []).append(t["source"])
        published = "; ".join(f"{d} ({', '.join(sources)})" for d, sources in by_date.items())
        notes.append(f"API prices as published on {published}; an entry's prices: replaces them")
    if est.gpu_cost is not None:
        notes.append(f"GPU cost: GPU-hours × cluster.gpu_hour_price (${est.gpu_cost:,.2f} of the total)")
    for m in est.models:
        notes += m.notes
    return notes + est.notes


def print_plan(est: PlanEstimate, out: Console | None = None) -> None:
    out = out or console
    out.print(plan_table(est))
    for note in plan_notes(est):
        out.print(Text(note, style="dim"))
