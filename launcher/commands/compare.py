"""``launcher compare RUN_OR_PREFIX...``: a leaderboard over runs, paired tests, and what changed.

Reads the same per-run tables as ``launcher export`` (kept in the launcher's cache, rebuilt
only for runs that changed) and prints, from ``launcher.results.compare``: the model x
benchmark accuracy table with 95% intervals and cost per correct answer, the paired tests on
shared questions, and, for exactly two runs, the answers that flipped. ``--json`` and
``--csv`` print machine-readable output instead; ``--html FILE`` writes the leaderboard page.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from launcher.commands.export import add_source_options, load_runs
from runner.errors import InputError, StorageError

PAIRS_SHOWN = 30
ANSWER_EXCERPT = 160


def register(sub) -> None:
    p = sub.add_parser("compare", help="leaderboard of runs (local or S3): accuracy with intervals, paired "
                                       "tests on shared questions, the answers that flipped")
    p.add_argument("paths", nargs="+", metavar="RUN_OR_PREFIX",
                   help="runs (folders or s3://bucket/prefix/run-id) or places holding runs")
    p.add_argument("--benchmark", action="append", metavar="NAME",
                   help="only this benchmark (as the leaderboard names it, e.g. medqa); repeatable")
    p.add_argument("--model", action="append", metavar="TEXT",
                   help="only models whose id or folder contains TEXT; repeatable")
    p.add_argument("--match", choices=("prompt", "question"), default="prompt",
                   help="pair answers on the same question and prompt (default), or on the question alone "
                        "(to compare system prompts)")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                   help="bootstrap resamples for intervals and paired tests (default 1000)")
    p.add_argument("--flips", type=int, default=10, metavar="N",
                   help="flipped answers shown per model for two runs (default 10; all are in --json/--html)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print everything as JSON")
    out.add_argument("--csv", action="store_true", help="print the leaderboard as CSV (one row per model and "
                                                        "benchmark)")
    p.add_argument("--html", metavar="FILE",
                   help="also write the leaderboard as one self-contained HTML page")
    add_source_options(p)
    p.set_defaults(func=cmd_compare)


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def _cell(c: dict[str, Any] | None) -> str:
    if not c:
        return "–"
    ci = f" [{100 * c['ci_low']:.1f}, {100 * c['ci_high']:.1f}]" if c.get("ci_low") is not None else ""
    return f"{_pct(c['accuracy'])}{ci} n={c['n']:,}{' *' if c['partial'] else ''}"


def _money(v: float | None) -> str:
    return "–" if v is None else f"${v:,.4f}"


def csv_text(result: dict[str, Any]) -> str:
    model = ("model_id", "revision", "backend", "quantization", "prompt_preset")
    cell = ("n", "correct", "accuracy", "ci_low", "ci_high", "cost_usd", "cost_per_correct", "partial")
    fields = ["rank", "model", *model, "benchmark", *cell, "runs"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for row in result["leaderboard"]:
        for bench, c in row["cells"].items():
            w.writerow({"rank": row["rank"], "model": row["label"], "benchmark": bench,
                        **{k: row[k] for k in model},
                        **{k: c[k] for k in cell}, "runs": " ".join(c["runs"])})
    return buf.getvalue()


def _check_two_runs(result: dict[str, Any]) -> None:
    shared = result.get("shared")
    if shared is None:
        return
    a, b = shared["a"], shared["b"]
    if shared["questions"] == 0:
        raise InputError(f"runs {a} and {b} share no question ({shared['a_questions']:,} and "
                         f"{shared['b_questions']:,} questions, none the same): nothing to pair")
    if result["match"] == "prompt" and shared["prompts"] == 0:
        raise InputError(f"runs {a} and {b} share {shared['questions']:,} questions but no prompt (other "
                         "system prompts or templates); pair on the question alone with --match question")


def _print(result: dict[str, Any], console: Console) -> None:
    runs = result["runs"]
    console.print(f"{len(runs)} run(s), {len(result['leaderboard'])} model configuration(s), "
                  f"{len(result['benchmarks'])} benchmark(s)", markup=False)
    for r in runs:
        state = {"partial": "partial: a model still running or not started", "failed": "a model failed"}
        extra = f"  ({state[r['status']]})" if r["status"] in state else ""
        created = (r["created_at"] or "")[:10]
        console.print(Text(f"  {r['run_id']}  {created}  {r['questions_label'] or ''}{extra}"))
    shared = result.get("shared")
    if shared:
        same = " answered with the same prompt" if result["match"] == "prompt" else ""
        console.print(Text(
            f"{shared['a']} has {shared['a_questions']:,} questions, {shared['b']} "
            f"{shared['b_questions']:,}; they share {shared['questions']:,}: paired tests and flips use only "
            f"the shared ones{same}"))
    board = Table(title="Leaderboard: accuracy [95% CI], questions (* from a partial run)",
                  title_justify="left")
    board.add_column("#", justify="right")
    board.add_column("model")
    for bench in result["benchmarks"]:
        board.add_column(Text(bench), justify="right")
    board.add_column("cost / correct", justify="right")
    for row in result["leaderboard"]:
        costs = [c["cost_per_correct"] for c in row["cells"].values() if c["cost_per_correct"] is not None]
        cost = _money(costs[0]) if len(costs) == 1 else ("various" if costs else "–")
        board.add_row(str(row["rank"]), Text(row["label"]),
                      *[_cell(row["cells"].get(b)) for b in result["benchmarks"]], cost)
    console.print(board)
    pairs = result["pairs"]
    if pairs:
        on = "same question and prompt" if result["match"] == "prompt" else "same question"
        table = Table(title=f"Paired on shared questions ({on}): McNemar, paired bootstrap",
                      title_justify="left")
        for col in ("benchmark", "A", "B", "questions", "A−B [95% CI]", "p", "verdict"):
            table.add_column(col, justify="right" if col in ("questions", "p") else "left")
        for p in pairs[:PAIRS_SHOWN]:
            ci = (f" [{100 * p['diff_ci_low']:+.1f}, {100 * p['diff_ci_high']:+.1f}]"
                  if p["diff_ci_low"] is not None else "")
            pval = "< 0.001" if p["mcnemar_p"] < 0.001 else f"{p['mcnemar_p']:.3f}"
            table.add_row(Text(p["benchmark"]), Text(p["a"]), Text(p["b"]), f"{p['n']:,}",
                          f"{100 * p['diff']:+.1f}{ci}", pval, p["verdict"])
        console.print(table)
        if len(pairs) > PAIRS_SHOWN:
            console.print(f"  … {len(pairs) - PAIRS_SHOWN} more pairs: --json, --csv or --html show them all",
                          markup=False)
    for flip in result["flips"]:
        console.print(Text(f"\nWhat changed for {flip['model_dir']}: {flip['a']} → {flip['b']}: "
                           f"{flip['flipped']} of {flip['n']:,} shared answers flipped "
                           f"({flip['right_to_wrong']} right → wrong, "
                           f"{flip['wrong_to_right']} wrong → right)"))
        for it in flip["items"]:
            console.print(Text(f"  {it['question_id']} (gold {it['gold']}): {it['question'][:100]}"))
            for side, run in (("a", flip["a"]), ("b", flip["b"])):
                a = it[side]
                text = " ".join((a["answer"] or "").split())
                text = text if len(text) <= ANSWER_EXCERPT else text[:ANSWER_EXCERPT] + " …"
                console.print(Text(f"    {run}: {a['choice'] or '–'} {a['outcome']}: {text}"))
        shown = len(flip["items"])
        if shown < flip["flipped"]:
            console.print(f"  … {flip['flipped'] - shown} more: --flips N, --json or --html", markup=False)


def cmd_compare(args) -> int:
    from launcher.results.compare import compare

    if args.bootstrap < 0:
        raise InputError("--bootstrap must be 0 or more")
    if args.flips < 0:
        raise InputError("--flips must be 0 or more")
    html = Path(args.html).expanduser() if args.html else None
    if html is not None and html.is_dir():
        raise InputError(f"--html {html}: is a folder; give a file name such as leaderboard.html")
    results = load_runs(args)
    full = compare(results, benchmarks=args.benchmark, models=args.model, match=args.match,
                   bootstrap=args.bootstrap)
    _check_two_runs(full)
    if html is not None:
        from launcher.report.leaderboard import write_leaderboard

        try:
            write_leaderboard(full, html)
        except OSError as e:
            raise StorageError(f"cannot write {html}: {e.strerror or e}") from e
    if args.json:
        sys.stdout.write(json.dumps(full, ensure_ascii=False, default=str, allow_nan=False) + "\n")
        return 0
    if args.csv:
        sys.stdout.write(csv_text(full))
        return 0
    shown = dict(full, flips=[dict(f, items=f["items"][:args.flips]) for f in full["flips"]])
    console = Console(highlight=False, soft_wrap=True)  # long lines wrap in the terminal, not in the text
    _print(shown, console)
    if html is not None:
        console.print(f"leaderboard → {html}", markup=False)
    return 0
