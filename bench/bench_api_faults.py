"""API runner under faults: sporadic 429s must slow a run, not serialise it.

The loopback OpenAI-compatible server of ``bench_api.py`` (in a process of its own) answers
each request in 200 ms and misbehaves deterministically, by arrival order:

1. baseline: 100 questions one at a time, no faults (the figure to beat: 20 s at best), and
   the same at ``concurrency: 16`` without faults (the floor for 2);
2. sporadic faults: every 6th request 429 with ``Retry-After: 1``, every 9th a 500;
   100 questions, ``concurrency: 16``; target: under 10 s, every answer under its own question;
3. a real limit: the server refuses (429, ``Retry-After: 1``) every request beyond 4 being
   answered at once; 100 questions, ``concurrency: 16``: the runner must back off (the
   figure shows how many requests the server refused) and still answer everything;
4. ``requests_per_minute: 600`` with the faults of (2), ``concurrency: 16``, 60 questions: the
   rate the server saw must stay at or under 600 a minute.

The questions default to the PubMedQA sample in questions/ (50 items, repeated with a mark in
the text so that every prompt differs).

    .venv/bin/python bench/bench_api_faults.py [--questions PATH] [--n 100]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # for tests.fakes and bench.bench_api when run as a script

from bench.bench_api import KEY, SAMPLE, RemoteServer, first_n, rate_per_minute, run_model  # noqa: E402
from runner.questions import Question  # noqa: E402

LATENCY = 0.2
SPORADIC = [(6, ("429", 1.0)), (9, ("500",))]
TARGET_S = 10.0


def answers_on_their_questions(questions: Path, n: int):
    """A check for run_model: every N.txt holds the answer to question N.

    The fake answers "Answer to: <the user message>", cut to max_new_tokens (64) words, so
    N.txt must be exactly that for the user message that carries question N's text.
    """
    qs = first_n(questions, n)

    def expected(q: Question, folder: Path) -> str | None:
        record = folder / "records" / f"{q.index:06d}.json"
        if not record.is_file():
            return None
        user = json.loads(record.read_text(encoding="utf-8"))["prompt"][-1]["content"]
        return " ".join(f"Answer to: {user}".split()[:64]) if q.question in user else None

    def check(folder: Path) -> None:
        wrong = [q.index for q in qs
                 if not (folder / f"{q.index}.txt").is_file()
                 or (folder / f"{q.index}.txt").read_text(encoding="utf-8") != expected(q, folder)]
        if wrong:
            raise SystemExit(f"answers missing or under the wrong question: {wrong[:10]}")

    return check


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", type=Path, default=SAMPLE)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--rpm-n", type=int, default=60)
    ap.add_argument("--skip-baseline", action="store_true", help="leave out the sequential run (20 s)")
    args = ap.parse_args()
    os.environ["OPENAI_API_KEY"] = KEY
    n = args.n
    check = answers_on_their_questions(args.questions, n)
    print(f"loopback server latency {LATENCY * 1000:.0f} ms; {n} questions from {args.questions}")

    seq = None
    if not args.skip_baseline:
        with RemoteServer(LATENCY) as server:
            seq, _ = run_model(server.url, args.questions, n, concurrency=1)
        print(f"1. sequential, no faults:                     {seq:7.2f} s")

    with RemoteServer(LATENCY) as server:
        floor, _ = run_model(server.url, args.questions, n, concurrency=16)
    print(f"   concurrency 16, no faults (the floor):       {floor:7.2f} s  (SDK import and client set-up "
          f"included, as in every line)")

    with RemoteServer(LATENCY, every=SPORADIC) as server:
        t, _ = run_model(server.url, args.questions, n, check=check, concurrency=16)
        sent = len(server.ask("starts"))
    versus = f"  ({seq / t:.1f}x the sequential run)" if seq else ""
    print(f"2. concurrency 16, 1/6 429 + 1/9 500:          {t:7.2f} s  {sent} requests, "
          f"all {n} answers on their own question{versus}  target < {TARGET_S:g} s")
    sporadic_ok = t < TARGET_S

    with RemoteServer(LATENCY, in_flight=(4, ("429", 1.0))) as server:
        t3, _ = run_model(server.url, args.questions, n, check=check, concurrency=16)
        refused, sent3 = server.ask("refused"), len(server.ask("starts"))
    print(f"3. concurrency 16, server takes 4 at once:      {t3:7.2f} s  {sent3} requests, "
          f"{refused} refused with 429 (best possible {n / 4 * LATENCY:.1f} s)")

    with RemoteServer(LATENCY, every=SPORADIC) as server:
        t4, _ = run_model(server.url, args.questions, args.rpm_n, concurrency=16, requests_per_minute=600)
        rate = rate_per_minute(server.ask("starts"))
    print(f"4. requests_per_minute 600, faults as in 2:    {t4:7.2f} s  measured {rate:.1f}/min "
          f"({rate / 600:.3f} of the limit)")

    ok = sporadic_ok and rate <= 600
    print("PASS" if ok else "MISS")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
