"""``launcher report DIR`` (HTML page + metrics) and ``launcher show DIR N`` (one question, every answer)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console, Group
from rich.panel import Panel
from rich.text import Text

from runner.errors import InputError

CONTEXT_EXCERPT = 600
REFERENCE_EXCERPT = 400
#: The most characters of any one text (question, option, context, reference, answer, error) a
#: terminal is shown, --full or not. Rich lays out an unbroken line in time that grows with the
#: square of its length: a 2 MB answer took 7 s, a 50 MB one minutes. The rest is in the files.
SHOWN_LIMIT = 20_000


def register(sub) -> None:
    p = sub.add_parser("report", help="write report.html, metrics.csv and metrics.json for a run folder")
    p.add_argument("run_dir", metavar="DIR", help="a local run folder (launcher collect fetches one from S3)")
    p.add_argument("-o", "--output", metavar="OUT", help="folder for the report files (default: DIR)")
    p.add_argument("--judge", metavar="MODEL",
                   help="first grade every answer with this API model of the run's config (LLM-as-judge)")
    p.add_argument("--encoder", default="minilm", metavar="NAME",
                   help="encoder for answer-vs-reference similarity: 'minilm' (default: all-MiniLM-L6-v2 "
                        "reading up to 128 word pieces), 'minilm-256', an encoder model of the run, or "
                        "'none' to skip it; vectors are kept in DIR/.cache for the next report")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                   help="bootstrap resamples for intervals and paired tests (default 1000)")
    p.set_defaults(func=cmd_report)

    s = sub.add_parser("show", help="print every model's answer to question N of a run folder")
    s.add_argument("run_dir", metavar="DIR", help="a local run folder")
    s.add_argument("n", metavar="N", help="the question's number (1-based, as in N.txt) or its id")
    s.add_argument("--full", action="store_true", help="print the whole context and reference")
    s.set_defaults(func=cmd_show)


def _run_dir(value: str) -> Path:
    p = Path(value).expanduser()
    if not p.is_dir():
        raise InputError(f"{p}: no such run folder")
    return p


def cmd_report(args) -> int:
    from launcher.report import build_report

    run_dir = _run_dir(args.run_dir)
    if args.bootstrap < 0:
        raise InputError("--bootstrap must be 0 or more")
    console = Console()
    if args.judge:
        from launcher.judge import run_judge

        # The judge's name and the folder are the user's text: never read as rich markup.
        with console.status(Text(f"judging answers with {args.judge}…")):
            folder = run_judge(run_dir, args.judge)
        console.print(f"judge verdicts → {folder}", markup=False, highlight=False)
    encoder = None if args.encoder.lower() == "none" else args.encoder
    with console.status("scoring…"):
        files = build_report(run_dir, Path(args.output) if args.output else None, encoder=encoder,
                             bootstrap=args.bootstrap)
    label = (files.metrics.get("run") or {}).get("questions_label")
    if label:
        console.print(f"  questions: {label}", markup=False, highlight=False)
    for m in files.metrics.get("models", []):
        mc = m.get("mc") or {}
        acc = f"accuracy {100 * mc['accuracy']:.1f}%" if mc.get("accuracy") is not None else ""
        if acc and mc.get("ci_low") is not None:  # no interval with --bootstrap 0
            acc += f" [{100 * mc['ci_low']:.1f}, {100 * mc['ci_high']:.1f}]"
        console.print(f"  {m['model_dir']}: {m.get('answered', 0)}/{m.get('n', 0)} answered  {acc}",
                      markup=False, highlight=False)
    sim = files.metrics.get("similarity")
    if sim:
        console.print(f"  similarity ({sim['encoder']}): {sim['texts']:,} texts, {sim.get('from_run', 0):,} "
                      f"embedded in the run, {sim['from_cache']:,} from the report's cache, "
                      f"{sim['embedded']:,} embedded now", markup=False, highlight=False)
    console.print(f"report → {files.html}\nmetrics → {files.csv}, {files.json}",
                  markup=False, highlight=False)
    return 0


# --- show -------------------------------------------------------------------------------------


def _find_item(items: list[dict], n: str) -> dict:
    if n.isascii() and n.isdigit():  # "²".isdigit() is True, but int("²") fails
        for it in items:
            if it["index"] == int(n):
                return it
    for it in items:
        if str(it.get("id")) == n:
            return it
    raise InputError(f"question {n!r}: not in this run; it has {len(items)} questions "
                     f"(numbers 1-{len(items)}, or give a question id)")


def _excerpt(text: str, limit: int, full: bool, style: str = "") -> Text:
    """``text`` cut at ``limit`` characters (at ``SHOWN_LIMIT`` with ``full``), with " …" and,
    past ``SHOWN_LIMIT``, a note of how much there is."""
    text = text.strip()
    limit = SHOWN_LIMIT if full else min(limit, SHOWN_LIMIT)
    if len(text) <= limit:
        return Text(text, style=style)
    out = Text(text[:limit].rstrip() + " …", style=style)
    if limit == SHOWN_LIMIT:
        out.append(f" [{limit:,} of {len(text):,} characters shown]", style="dim")
    return out


def _answer_text(text: str, whole: Path) -> Text:
    """An answer as shown: at most ``SHOWN_LIMIT`` characters, then the file that holds it all."""
    shown = _excerpt(text, SHOWN_LIMIT, True)
    if len(text.strip()) > SHOWN_LIMIT and whole.is_file():
        shown.append(f" (all of it: {whole})", style="dim")
    return shown


_STYLE = {"correct": "green", "wrong": "red", "noanswer": "yellow", "error": "yellow", "free": "blue"}


def render_item(item: dict, models: list[dict], *, full: bool = False, run_dir: Path = Path(".")) -> list:
    """The rich renderables for one question and every model's answer (untrusted text stays text).

    Every text is cut at ``SHOWN_LIMIT`` characters, with a note of its size; an answer's note
    names its ``N.txt`` under ``run_dir``.
    """
    from launcher.report.html import _status

    out: list = []
    head = Text()
    head.append(f"Question {item['index']}", style="bold")
    head.append(f"  id {item.get('id')}\n", style="dim")
    head.append_text(_excerpt(item["question"], SHOWN_LIMIT, full, "bold"))
    parts: list = [head]
    if item.get("context"):
        context = _excerpt(item["context"], CONTEXT_EXCERPT, full)
        parts.append(Text("\nContext: ", style="dim") + context)
    gold = item.get("gold")
    if item.get("options"):
        opts = Text("\nOptions: ", style="dim")
        for k, v in item["options"].items():
            opts.append_text(_excerpt(f"{k}. {v}", SHOWN_LIMIT, full, "bold green" if k == gold else ""))
            opts.append(" (gold)  " if k == gold else "  ", style="green" if k == gold else "")
        parts.append(opts)
    if item.get("reference"):
        parts.append(Text("\nReference: ", style="dim")
                     + _excerpt(item["reference"], REFERENCE_EXCERPT, full))
    out.append(Panel(Group(*parts), border_style="cyan"))
    answers = item.get("answers") or {}
    for m in models:
        if m.get("kind") == "embed":
            continue
        a = answers.get(m["model_dir"])
        if a is None:
            out.append(Panel(Text("not run", style="dim"), title=Text(m["model_dir"]), title_align="left",
                             border_style="dim"))
            continue
        status, badge = _status(a, gold)
        body = Text()
        if a.get("error"):
            body.append_text(_excerpt(f"error: {a['error']}", SHOWN_LIMIT, full, "yellow"))
            body.append("\n")
        if a.get("text"):
            body.append_text(_answer_text(str(a["text"]), run_dir / m["model_dir"] / f"{item['index']}.txt"))
        elif not a.get("error"):
            body.append("(no prose answer)", style="dim")
        extra = []
        if a.get("latency_s") is not None:
            extra.append(f"{a['latency_s']:.2f} s")
        if a.get("finish_reason") == "length":
            extra.append("cut off at max_new_tokens")
        # The badge carries the option's letter, which is the questions file's text.
        subtitle = Text(" · ".join(([badge] if status != "free" else []) + extra)) or None
        out.append(Panel(body, title=Text(m["model_dir"], style="bold"), title_align="left",
                         subtitle=subtitle, subtitle_align="right", border_style=_STYLE[status]))
    return out


def cmd_show(args) -> int:
    from launcher.scoring.metrics import compute_metrics
    from launcher.scoring.run_data import load_run

    run_dir = _run_dir(args.run_dir)
    run = load_run(run_dir)
    # Only this question's choice and correctness are needed: no encoder, no resampling.
    metrics = compute_metrics(run, similarity_encoder=None, bootstrap=0)
    item = _find_item(metrics["items"], args.n)
    console = Console(highlight=False)
    for r in render_item(item, metrics["models"], full=args.full, run_dir=run_dir):
        console.print(r)
    return 0
