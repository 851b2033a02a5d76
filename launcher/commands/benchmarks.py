"""``launcher benchmarks``: the named benchmarks a config can use as ``questions:``.

``launcher benchmarks`` lists them (splits with their sizes, licence, pinned dataset);
``launcher benchmarks NAME`` shows one, with its prompts; ``--download`` fills the datasets
cache on a machine with network so that offline machines (given that cache) can load it.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from runner.benchmarks import BENCHMARKS, Benchmark, BenchmarkSource, find_benchmark
from runner.benchmarks.prompts import prompts_for
from runner.errors import InputError


def register(sub) -> None:
    p = sub.add_parser("benchmarks",
                       help="list the named benchmarks (MedQA, MedMCQA, PubMedQA, MMLU medical)")
    p.add_argument("name", nargs="?", help="show this benchmark: its splits, licence and prompts")
    p.add_argument("--subject", help="MMLU subject (with --download: default all six)")
    p.add_argument("--split", help="with --download: the split to load (default the scored one)")
    p.add_argument("--revision", help="with --download: a Hub commit other than the pinned one")
    p.add_argument("--download", action="store_true",
                   help="load it from the Hub into the datasets cache (needs network)")
    p.set_defaults(func=cmd_benchmarks)


def _splits(bench: Benchmark, subject: str | None) -> str:
    default = bench.default_split
    return ", ".join(f"{s}{'*' if s == default else ''} {n}" for s, n in bench.splits_for(subject).items())


def _rows(bench: Benchmark):
    yield from bench.subjects or [None]


def _list(console: Console) -> None:
    table = Table("benchmark", "subject", "splits (rows; * scored)", "licence", "Hub dataset @ revision",
                  title="named benchmarks")
    for bench in BENCHMARKS.values():
        for subject in _rows(bench):
            rev = bench.revision[:7] if bench.revision else "unpinned"
            table.add_row(bench.name, subject or "", _splits(bench, subject), bench.license,
                          f"{bench.dataset} @ {rev}")
    console.print(table)
    for bench in BENCHMARKS.values():
        console.print(f"[bold]{bench.name}[/]: {bench.title}: {bench.measures}.", highlight=False)
    console.print("Use one as `questions: {benchmark: medqa, split: test, limit: 500, seed: 0}`; "
                  "`launcher benchmarks NAME` shows its prompts.", markup=False, highlight=False)


def _show(console: Console, bench: Benchmark, subject: str | None) -> None:
    subjects = [subject] if subject else list(_rows(bench))
    out = [
        f"{bench.name}: {bench.title}",
        f"  measures      {bench.measures}",
        f"  dataset       {bench.dataset}",
        f"  revision      {bench.revision or 'unpinned'} ({bench.revision_note})",
        f"  licence       {bench.license}",
        f"  lm-eval task  {bench.task_for(subjects[0]) if bench.subjects else bench.lm_eval_task}"
        + (" (one per subject)" if bench.subjects and not subject else ""),
    ]
    if bench.subjects:
        out.append("  subjects      (splits: rows; * scored)")
        out += [f"    {s:<22}{_splits(bench, s)}: {bench.subjects[s].measures}" for s in subjects]
    else:
        out.append(f"  splits        {_splits(bench, None)}  (rows; * scored)")
    example = subjects[0]
    prompts = prompts_for(BenchmarkSource(benchmark=bench.name, subject=example))
    ll = prompts.loglikelihood
    scored = "option letters" if ll.continuations == "letters" else "option texts"
    out += [
        "",
        f"scoring: loglikelihood (as lm-evaluation-harness; {scored} scored after {ll.target_delimiter!r})"
        + (f", subject {example}" if bench.subjects else "") + ":",
        "  " + repr(ll.prompt_template),
        "generative (instruction prompt):",
        "  " + repr(prompts.instruction_template),
    ]
    console.print("\n".join(out), markup=False, highlight=False)


def _source(bench: Benchmark, subject: str | None, split: str | None,
            revision: str | None) -> BenchmarkSource:
    try:
        return BenchmarkSource(benchmark=bench.name, subject=subject, split=split, revision=revision)
    except ValidationError as e:
        raise InputError(e.errors()[0]["msg"].removeprefix("Value error, ")) from None


def _download(console: Console, bench: Benchmark, subject: str | None, split: str | None,
              revision: str | None) -> None:
    from runner.benchmarks.to_questions import load_benchmark

    sources = [_source(bench, s, split, revision) for s in ([subject] if subject else list(_rows(bench)))]
    for source in sources:
        questions, prov = load_benchmark(source, Path("."))
        console.print(f"{source.label}: {len(questions)} questions from {prov['dataset']}@{prov['revision']} "
                      "are in the datasets cache", markup=False, highlight=False)


def cmd_benchmarks(args) -> int:
    console = Console()
    if args.name is None:
        if args.download or args.subject or args.split or args.revision:
            raise InputError("--download, --subject, --split and --revision need a benchmark name: "
                             "launcher benchmarks NAME ...")
        _list(console)
        return 0
    bench = find_benchmark(args.name)
    if args.download:
        _download(console, bench, args.subject, args.split, args.revision)
        return 0
    if args.split or args.revision:
        raise InputError("--split and --revision go with --download")
    if args.subject is not None:
        _source(bench, args.subject, None, None)  # checks the subject
    _show(console, bench, args.subject)
    return 0
