"""How long `launcher report` takes, how much memory it needs and how big the page is, at two sizes.

1. 6 models x 200 questions: the 200 PubMedQA items of ../shared/data/pubmedqa_200.jsonl.
   First report (nothing cached, MiniLM similarity on, as a user gets it), then a second
   report of the same run (embeddings and ROUGE-L scores read back from the run's cache).
   Targets: first < 5 s, second < 2 s.
2. 20 models x 1,000 questions (the PubMedQA items cycled): first report < 60 s, with its
   peak memory; the second report and the page in headless Chromium (load, search, filter)
   are measured too.
3. At both sizes, the first report of the run whose answers were embedded *in the run*, as
   the runner now does at the end of each model (``runner.engine.answer_vectors``, called here
   on each model's records exactly as ``ModelRun`` calls it): the report then only reads the
   vectors. The time the embedding took is printed too: what the model's pods spend on it (on
   this machine's CPU; on a GPU a fraction of it). Targets: 6 x 200 < 5 s, 20 x 1,000 < 60 s.

Answers are synthetic but realistic (tests/report_fixtures.py ``realistic_models``): real
sentences from the abstracts, each model with its own typical length (median 45-300 words,
cut at about 512 tokens), verdict styles, U+2028, "[/]" and tag-like text, a few errors.
Every report runs as a user types it: ``launcher report`` in a new process, imports and
encoder load included. Each size is also reported with ``--encoder none`` (nothing cached),
so the cost of similarity is the difference. Peak memory is the process's maximum RSS.

    .venv/bin/python bench/bench_report.py [--keep DIR] [--skip-scale] [--skip-cold] [--pubmedqa FILE]

``--skip-cold`` leaves out the first report that embeds everything itself (minutes at scale;
its figure is in bench/RESULTS.md).

Timings on a shared machine are rough: the figures and ratios are printed for a re-run on an
idle one.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from runner.questions import load_questions  # noqa: E402
from tests.cdp import CHROMIUM, Chromium  # noqa: E402
from tests.report_fixtures import realistic_models, scaled_questions, write_run  # noqa: E402

PUBMEDQA = REPO.parent / "shared" / "data" / "pubmedqa_200.jsonl"
LAUNCHER = REPO / ".venv" / "bin" / "launcher"
TARGETS = {"small_first_s": 5.0, "small_second_s": 2.0, "scale_first_s": 60.0, "page_mb": 50.0}


def embed_in_run(run: Path) -> float:
    """What the runner does at the end of each model: its answers' vectors stored in the run.
    Seconds it took, for all models (this machine's CPU)."""
    from runner.artefacts import jsonl
    from runner.engine.answer_vectors import embed_answers
    from runner.storage import LocalStorage

    questions = load_questions(run / "questions.jsonl")
    references = [q.reference for q in questions if q.reference]
    storage = LocalStorage(run.parent)
    t0 = time.perf_counter()
    for folder in sorted(p for p in run.iterdir() if (p / "responses.jsonl").is_file()):
        text = (folder / "responses.jsonl").read_text(encoding="utf-8")
        records = [r for _, r in jsonl.parse(text)]
        answers = [r["response"] for r in records if r.get("error") is None and r.get("response")]
        facts, warning = embed_answers(storage, run.name, folder.name, 0, answers, references, "minilm")
        if warning:
            raise SystemExit(warning)
    return time.perf_counter() - t0


def report(run: Path, *extra: str) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one ``launcher report`` in a new process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(LAUNCHER), "report", str(run), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"launcher report {run} failed:\n{out.decode(errors='replace')}")
    return wall, usage.ru_maxrss / 1024


def build(root: Path, pubmedqa: Path, n_models: int, n_questions: int) -> Path:
    questions = scaled_questions(load_questions(pubmedqa), n_questions)
    t0 = time.perf_counter()
    run = write_run(root, questions, realistic_models(n_models, questions), name="bench",
                    run_id=f"bench-{n_models}x{n_questions}", records=True)
    chars = sum((p / "responses.jsonl").stat().st_size for p in run.iterdir() if p.is_dir())
    print(f"\n{n_models} models x {n_questions} questions in {run} "
          f"({chars / 1e6:.0f} MB of records, written in {time.perf_counter() - t0:.0f} s)")
    return run


def measure(run: Path, cold: bool) -> dict[str, float]:
    """--encoder none (nothing cached); the default: first (nothing cached, nothing in the run),
    second (from the report's cache); then the first report of the run embedded in the run."""
    shutil.rmtree(run / ".cache", ignore_errors=True)
    none_s, none_mb = report(run, "--encoder", "none")
    out = {"none_s": none_s}
    if cold:
        shutil.rmtree(run / ".cache", ignore_errors=True)
        first_s, first_mb = report(run)
        second_s, second_mb = report(run)
        print(f"  first report (MiniLM similarity, nothing cached): {first_s:7.1f} s   "
              f"peak {first_mb:6.0f} MB")
        print(f"  second report (from the report's cache):          {second_s:7.1f} s   "
              f"peak {second_mb:6.0f} MB")
        out.update(first_s=first_s, second_s=second_s, first_mb=first_mb)
    print(f"  --encoder none (nothing cached):                  {none_s:7.1f} s   peak {none_mb:6.0f} MB")
    shutil.rmtree(run / ".cache", ignore_errors=True)
    # In a process of its own, as in a pod (and so this one stays small: a child forked from a
    # process holding torch would report that memory as its own peak).
    done = subprocess.run([sys.executable, __file__, "--embed-in-run", str(run)], check=True,
                          capture_output=True, text=True)
    embed_s = float(done.stdout.split()[-1])
    in_run_s, in_run_mb = report(run)
    print(f"  answers embedded in the run (the pods' work, here on the CPU): {embed_s:.1f} s")
    print(f"  first report, answers embedded in the run:        {in_run_s:7.1f} s   peak {in_run_mb:6.0f} MB")
    page_mb = (run / "report.html").stat().st_size / 1e6
    json_mb = (run / "metrics.json").stat().st_size / 1e6
    print(f"  report.html: {page_mb:.1f} MB; metrics.json: {json_mb:.1f} MB")
    return {**out, "in_run_s": in_run_s, "in_run_mb": in_run_mb, "embed_s": embed_s, "page_mb": page_mb}


def browse(page: Path, profile: Path) -> dict[str, float]:
    """Load the page, type a search, pick a model filter: seconds each, as a user waits."""
    with Chromium(profile) as b:
        t0 = time.perf_counter()
        b.open(page.resolve().as_uri())
        ready_ms = b.wait_for("document.body.dataset.ready")
        load_s = time.perf_counter() - t0
        before = b.eval("document.getElementById('count').textContent")
        b.click("#search")
        word = b.eval("document.querySelector('.ans pre:not(.err)').textContent.split(/\\s+/)"
                      ".filter(w => /^[a-z]{9,}$/.test(w))[0]")
        b.type(word[:-1])
        t = time.perf_counter()
        b.type(word[-1])
        b.wait_for(f"document.getElementById('count').textContent !== {before!r} && "
                   "document.querySelectorAll('article.q').length > 0")
        search_s = time.perf_counter() - t
        found = b.eval("document.getElementById('count').textContent")
        b.eval("(() => { const s = document.getElementById('f-status'); s.value = 'wrong'; "
               "s.dispatchEvent(new Event('change')); })()")
        wrong = b.wait_for(f"(c => c !== {found!r} && c)(document.getElementById('count').textContent)")
        # A <select> cannot be opened in headless Chromium: its value is set and "change" sent,
        # which is what the browser does when a user picks an option.
        t = time.perf_counter()
        b.eval("(() => { const m = document.getElementById('f-model'); m.value = '3'; "
               "m.dispatchEvent(new Event('change')); })()")
        b.wait_for(f"document.getElementById('count').textContent !== {wrong!r}")
        filter_s = time.perf_counter() - t
    print(f"  in Chromium: loaded in {load_s:.1f} s (script ready at {int(ready_ms) / 1000:.1f} s); "
          f"search {word!r} -> {found} in {search_s * 1000:.0f} ms after the last key "
          f"(120 ms of it the typing pause); model + status filter in {filter_s * 1000:.0f} ms")
    return {"load_s": load_s, "search_s": search_s, "filter_s": filter_s}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", metavar="DIR", help="write the runs here instead of a temporary folder")
    ap.add_argument("--skip-scale", action="store_true", help="only the 6 x 200 run")
    ap.add_argument("--skip-cold", action="store_true",
                    help="leave out the first report that embeds every answer itself")
    ap.add_argument("--pubmedqa", type=Path, default=PUBMEDQA, help=f"the shared items (default {PUBMEDQA})")
    ap.add_argument("--embed-in-run", metavar="RUN", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.embed_in_run:
        print(f"{embed_in_run(Path(args.embed_in_run)):.3f}")
        return 0
    if not args.pubmedqa.exists():
        raise SystemExit(f"{args.pubmedqa} not found (it lives in shared/, beside the repository; "
                         "or give --pubmedqa)")
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-report-"))
    checks = []

    small = measure(build(root, args.pubmedqa, 6, 200), cold=not args.skip_cold)
    small_first = TARGETS["small_first_s"]
    checks += [("6 x 200 first report, embedded in the run", small["in_run_s"], small_first, "s")]
    if not args.skip_cold:
        checks += [("6 x 200 first report, nothing embedded", small["first_s"], small_first, "s"),
                   ("6 x 200 second report", small["second_s"], TARGETS["small_second_s"], "s")]
    if not args.skip_scale:
        run = build(root, args.pubmedqa, 20, 1000)
        scale = measure(run, cold=not args.skip_cold)
        checks += [("20 x 1,000 first report, embedded in the run", scale["in_run_s"],
                    TARGETS["scale_first_s"], "s"),
                   ("20 x 1,000 report.html", scale["page_mb"], TARGETS["page_mb"], "MB")]
        if not args.skip_cold:
            checks += [("20 x 1,000 first report, nothing embedded", scale["first_s"],
                        TARGETS["scale_first_s"], "s")]
        print(f"  peak memory per answer: 6 x 200 {small['in_run_mb'] * 1024 / 1200:.0f} KB, "
              f"20 x 1,000 {scale['in_run_mb'] * 1024 / 20000:.0f} KB")
        if CHROMIUM.exists():
            browse(run / "report.html", root / "chromium-profile")
        else:
            print(f"  (no {CHROMIUM}: the page was not opened in a browser)")

    print()
    ok = True
    for name, value, target, unit in checks:
        met = value < target
        ok &= met
        print(f"{name:45s} {value:8.1f} {unit:2s} target < {target:g} {unit}  ({value / target:.0%} of it) "
              f"{'met' if met else 'NOT met'}")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
