"""How long finding the chosen option in a free-text answer takes (launcher/scoring/extract.py).

The answers of bench/bench_results.py's runs (a verdict in one of four styles, then sentences
of the PubMedQA abstracts, median 45-300 words, 200-2,000 characters), three benchmarks'
options, each read by the rules as first written (tests/extract_reference.py) and by the
current module; every choice and rule must be the same. Best of ``--repeat`` passes.

    .venv/bin/python bench/bench_extract.py [--answers 3000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import bench_results  # noqa: E402

from launcher.scoring import extract  # noqa: E402
from runner.questions import load_questions  # noqa: E402
from tests import extract_reference  # noqa: E402


def answers(pubmedqa: Path, n: int) -> list[tuple[str, dict[str, str]]]:
    base = load_questions(pubmedqa)
    pool = [s for q in base for s in bench_results.sentences((q.context or "") + " " + (q.reference or ""))]
    questions = [q for qs in bench_results.pools(base).values() for q in qs]
    rng = random.Random(1)
    out = []
    for _ in range(n):
        q = rng.choice(questions)
        model_id, _backend, _revs, skill, median, _price = rng.choice(bench_results.PANEL)
        assert q.options is not None
        out.append((bench_results.answer_text(rng, model_id, q, skill, median, pool), q.options))
    return out


def best_of(fn, sample: list[tuple[str, dict[str, str]]], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for text, options in sample:
            fn(text, options)
        times.append(time.perf_counter() - t0)
    return min(times) / len(sample)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--answers", type=int, default=3000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--pubmedqa", type=Path, default=bench_results.PUBMEDQA)
    args = ap.parse_args()
    sample = answers(args.pubmedqa, args.answers)
    same = sum(
        (a.choice, a.rule) == (b.choice, b.rule)
        for a, b in ((extract_reference.extract(t, o), extract.extract(t, o)) for t, o in sample))
    before = best_of(extract_reference.extract, sample, args.repeat)
    after = best_of(extract.extract, sample, args.repeat)
    chars = sum(len(t) for t, _ in sample) / len(sample)
    print(f"{len(sample):,} answers, {chars:,.0f} characters on average")
    print(f"  rules as first written   {before * 1e6:7.1f} us an answer")
    print(f"  launcher.scoring.extract {after * 1e6:7.1f} us an answer   x{before / after:.1f}")
    print(f"  same choice and rule     {same:,} / {len(sample):,}")
    return 0 if same == len(sample) else 1


if __name__ == "__main__":
    sys.exit(main())
