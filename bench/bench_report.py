"""How long `launcher report` takes, how much memory it needs and how big the page is, at two sizes.

1. 6 models x 200 questions: the 200 PubMedQA items of ../shared/data/pubmedqa_200.jsonl.
   First report (nothing cached, MiniLM similarity on, as a user gets it), then a second
   report of the same run (embeddings and ROUGE-L scores read back from the run's cache).
   Targets: first < 5 s, second < 2 s.
2. 20 models x 1,000 questions (the PubMedQA items cycled): first report < 60 s, with its
   peak memory; the second report and the page in headless Chromium (load, search, filter)
   are measured too.

Answers are synthetic but realistic (tests/report_fixtures.py ``realistic_models``): real
sentences from the abstracts, each model with its own typical length (median 45-300 words,
cut at about 512 tokens), verdict styles, U+2028, "[/]" and tag-like text, a few errors.
Every report runs as a user types it: ``launcher report`` in a new process, imports and
encoder load included. Each size is also reported with ``--encoder none`` (nothing cached),
so the cost of similarity is the difference. Peak memory is the process's maximum RSS.

    .venv/bin/python bench/bench_report.py [--keep DIR] [--skip-scale]

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


def build(root: Path, n_models: int, n_questions: int) -> Path:
    questions = scaled_questions(load_questions(PUBMEDQA), n_questions)
    t0 = time.perf_counter()
    run = write_run(root, questions, realistic_models(n_models, questions), name="bench",
                    run_id=f"bench-{n_models}x{n_questions}", records=True)
    chars = sum((p / "responses.jsonl").stat().st_size for p in run.iterdir() if p.is_dir())
    print(f"\n{n_models} models x {n_questions} questions in {run} "
          f"({chars / 1e6:.0f} MB of records, written in {time.perf_counter() - t0:.0f} s)")
    return run


def measure(run: Path) -> dict[str, float]:
    """--encoder none (nothing cached), then the default twice: first (nothing cached), second."""
    shutil.rmtree(run / ".cache", ignore_errors=True)
    none_s, none_mb = report(run, "--encoder", "none")
    shutil.rmtree(run / ".cache", ignore_errors=True)
    first_s, first_mb = report(run)
    second_s, second_mb = report(run)
    page_mb = (run / "report.html").stat().st_size / 1e6
    print(f"  first report (MiniLM similarity, nothing cached): {first_s:7.1f} s   peak {first_mb:6.0f} MB")
    print(f"  second report (from the run's cache):             {second_s:7.1f} s   peak {second_mb:6.0f} MB")
    print(f"  --encoder none (nothing cached):                  {none_s:7.1f} s   peak {none_mb:6.0f} MB"
          f"   -> similarity costs {first_s - none_s:.1f} s of the first report")
    json_mb = (run / "metrics.json").stat().st_size / 1e6
    print(f"  report.html: {page_mb:.1f} MB; metrics.json: {json_mb:.1f} MB")
    return {"first_s": first_s, "second_s": second_s, "none_s": none_s, "first_mb": first_mb,
            "page_mb": page_mb}


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
    args = ap.parse_args()
    if not PUBMEDQA.exists():
        raise SystemExit(f"{PUBMEDQA} not found (it lives in shared/, beside the repository)")
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-report-"))
    checks = []

    small = measure(build(root, 6, 200))
    checks += [("6 x 200 first report", small["first_s"], TARGETS["small_first_s"], "s"),
               ("6 x 200 second report", small["second_s"], TARGETS["small_second_s"], "s")]
    if not args.skip_scale:
        run = build(root, 20, 1000)
        scale = measure(run)
        checks += [("20 x 1,000 first report", scale["first_s"], TARGETS["scale_first_s"], "s"),
                   ("20 x 1,000 report.html", scale["page_mb"], TARGETS["page_mb"], "MB")]
        print(f"  peak memory per answer: 6 x 200 {small['first_mb'] * 1024 / 1200:.0f} KB, "
              f"20 x 1,000 {scale['first_mb'] * 1024 / 20000:.0f} KB")
        if CHROMIUM.exists():
            browse(run / "report.html", root / "chromium-profile")
        else:
            print(f"  (no {CHROMIUM}: the page was not opened in a browser)")

    print()
    ok = True
    for name, value, target, unit in checks:
        met = value < target
        ok &= met
        print(f"{name:26s} {value:8.1f} {unit:2s} target < {target:g} {unit}  ({value / target:.0%} of it) "
              f"{'met' if met else 'NOT met'}")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
