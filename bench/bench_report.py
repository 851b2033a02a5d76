"""How long `launcher report` takes, and how big the page is, for 6 models x 200 questions.

The questions are the 200 PubMedQA items of ../shared/data/pubmedqa_200.jsonl (real contexts
and references, so the page carries realistic text); the answers are synthetic (20-260 words
each, a mix of right, wrong and unanswered). Similarity scoring with the MiniLM encoder is on,
as a user gets it by default. Targets: under 10 s end to end and under 20 MB of HTML.

    .venv/bin/python bench/bench_report.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from runner.questions import load_questions  # noqa: E402
from tests.report_fixtures import synthetic_models, write_run  # noqa: E402

PUBMEDQA = REPO.parent / "shared" / "data" / "pubmedqa_200.jsonl"
TARGET_S = 10.0
TARGET_MB = 20.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", metavar="DIR", help="write the run and report here instead of a temp folder")
    ap.add_argument("--models", type=int, default=6)
    args = ap.parse_args()

    questions = load_questions(PUBMEDQA)
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-report-"))
    run = write_run(root, questions, synthetic_models(args.models), name="bench", run_id="bench-report")
    print(f"run: {len(questions)} questions x {args.models} models in {run}")

    # End to end, as a user types it: a fresh process, imports and encoder load included.
    launcher = REPO / ".venv" / "bin" / "launcher"
    t0 = time.perf_counter()
    proc = subprocess.run([str(launcher), "report", str(run)], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        print(proc.stdout, proc.stderr, sep="\n")
        return 1
    html = run / "report.html"
    size_mb = html.stat().st_size / 1e6

    # Where the time goes, in this process (the encoder is loaded here again).
    from launcher.report.html import render_html
    from launcher.scoring.metrics import compute_metrics
    from launcher.scoring.run_data import load_run

    t = time.perf_counter()
    data = load_run(run)
    t_load = time.perf_counter() - t
    t = time.perf_counter()
    metrics = compute_metrics(data, similarity_encoder="minilm")
    t_score = time.perf_counter() - t
    t = time.perf_counter()
    render_html(metrics)
    t_render = time.perf_counter() - t
    t = time.perf_counter()
    compute_metrics(data, similarity_encoder=None)
    t_score_nosim = time.perf_counter() - t

    print(f"end to end (launcher report, new process): {wall:6.2f} s   target < {TARGET_S:g} s "
          f"({wall / TARGET_S:.0%} of budget)")
    print(f"report.html size:                          {size_mb:6.2f} MB  target < {TARGET_MB:g} MB "
          f"({size_mb / TARGET_MB:.0%} of budget)")
    print(f"  load_run            {t_load:6.2f} s")
    print(f"  compute_metrics     {t_score:6.2f} s  (with MiniLM similarity)")
    print(f"  compute_metrics     {t_score_nosim:6.2f} s  (--encoder none)")
    print(f"  render_html         {t_render:6.2f} s")
    ok = wall < TARGET_S and size_mb < TARGET_MB
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
