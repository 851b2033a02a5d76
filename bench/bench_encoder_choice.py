"""Which encoder the report's similarity uses by default: speed against ranking agreement.

The reference is all-MiniLM-L6-v2 as its sentence-transformers folder configures it (256 word
pieces, ``--encoder minilm-256``). Each candidate derived from it embeds the same answers and
references, and the figures say whether it ranks the models the same way:

- model-mean Spearman / same order: the per-model mean similarity to the references, the
  number the report's table shows, ranked by the candidate and by the reference;
- per-answer Pearson and Spearman of the similarities themselves;
- pair order: over every question and every two models, how often both encoders agree
  which model's answer is closer to the reference (what the paired tests build on).

The answers are real text of realistic length (10-350 words) from the 200 PubMedQA items of
../shared/data/pubmedqa_200.jsonl, given by a panel of answer "styles" of graded relevance,
from the verdict and the abstract's evidence to another question's abstract; or, with
``--run DIR``, the free-text answers of a real run folder. Speed is CPU time (both torch
threads), which a busy shared machine disturbs less than wall time.

    .venv/bin/python bench/bench_encoder_choice.py [--questions 100] [--run DIR]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from launcher.scoring.similarity import BATCH_SIZE, TextEncoder, resolve_encoder  # noqa: E402
from runner.embeddings import MINILM  # noqa: E402

PUBMEDQA = REPO.parent / "shared" / "data" / "pubmedqa_200.jsonl"
#: Switch only if the candidate keeps the reference's order of models and agrees per answer.
MIN_PER_ANSWER_R = 0.98


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text.replace("\n", " ")) if s]


def pubmedqa_panel(n: int) -> tuple[dict[str, list[str]], list[str]]:
    """Answer styles of graded relevance, in real sentences, and the references."""
    rows = [json.loads(line) for line in PUBMEDQA.read_text(encoding="utf-8").splitlines() if line.strip()]
    items, k = rows[:n], len(rows)

    def ctx(i: int) -> list[str]:
        return _sentences(rows[i % k]["context"])

    styles = {
        "verdict-then-evidence": lambda i, x: f"{x['answer'].capitalize()}. {x['reference']} "
                                              + " ".join(ctx(i)[-4:]),
        "evidence-then-verdict": lambda i, x: " ".join(ctx(i)) + f" In conclusion: {x['reference']}",
        "results-only": lambda i, x: " ".join(ctx(i)[-2:]),
        "background-only": lambda i, x: " ".join(ctx(i)[:4]),
        "question-echo": lambda i, x: f"The question is whether {x['question'][:1].lower()}"
                                      f"{x['question'][1:]} The answer is {x['answer']}.",
        "half-off-topic": lambda i, x: ctx(i)[-1] + " " + rows[(i + 37) % k]["reference"] + " "
                                       + " ".join(ctx(i + 41)[:3]),
        "hedge-off-topic": lambda i, x: "It is difficult to give a definitive answer without more data. "
                                        + " ".join(ctx(i + 37)[:5]),
        "other-reference": lambda i, x: rows[(i + 1) % k]["reference"],
        "other-abstract": lambda i, x: " ".join(ctx(i + 50)),
    }
    panel = {name: [f(i, x) for i, x in enumerate(items)] for name, f in styles.items()}
    return panel, [x["reference"] for x in items]


def run_panel(run_dir: Path) -> tuple[dict[str, list[str]], list[str]]:
    """The free-text answers of a run folder, on the questions that have a reference and every answer."""
    from launcher.scoring.run_data import load_run

    run = load_run(run_dir)
    models = [m for m in run.models if m.kind != "embed"]
    records = {m.model_dir: m.records for m in models}
    keep = [q for q in run.questions if q.reference and all(
        (records[m.model_dir].get(q.index) or {}).get("response") for m in models)]
    panel = {m.model_dir: [records[m.model_dir][q.index]["response"] for q in keep] for m in models}
    return panel, [q.reference for q in keep]


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x), dtype=float)
    for value in np.unique(x):  # ties share their mean rank
        tied = x == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(a, b) -> float:
    return float(np.corrcoef(_ranks(np.asarray(a)), _ranks(np.asarray(b)))[0, 1])


def similarities(encoder: TextEncoder, panel: dict[str, list[str]],
                 refs: list[str]) -> tuple[dict, float, float]:
    """Per model, the similarity of each answer to its reference; CPU and wall seconds."""
    texts = list(dict.fromkeys(refs + [t for answers in panel.values() for t in answers]))
    row = {t: i for i, t in enumerate(texts)}
    cpu, wall = time.process_time(), time.perf_counter()
    vectors = encoder.vectors(texts, None)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    if vectors is None:
        raise SystemExit(encoder.note)
    ref = vectors[[row[r] for r in refs]]
    out = {name: (vectors[[row[t] for t in answers]] * ref).sum(axis=1) for name, answers in panel.items()}
    return out, cpu, wall


def agreement(ref: dict[str, np.ndarray], cand: dict[str, np.ndarray]) -> dict[str, float | bool]:
    names = list(ref)
    mean_ref = [float(ref[n].mean()) for n in names]
    mean_cand = [float(cand[n].mean()) for n in names]
    all_ref = np.concatenate([ref[n] for n in names])
    all_cand = np.concatenate([cand[n] for n in names])
    same = total = 0
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            a = np.sign(ref[names[i]] - ref[names[j]])
            b = np.sign(cand[names[i]] - cand[names[j]])
            same += int((a == b).sum())
            total += len(a)
    return {
        "model_mean_spearman": spearman(mean_ref, mean_cand),
        "same_order": list(np.argsort(mean_ref)) == list(np.argsort(mean_cand)),
        "per_answer_pearson": float(np.corrcoef(all_ref, all_cand)[0, 1]),
        "per_answer_spearman": spearman(all_ref, all_cand),
        "pair_order": same / total,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", type=int, default=100, help="PubMedQA items to use (default 100)")
    ap.add_argument("--run", metavar="DIR", help="use the free-text answers of this run folder instead")
    args = ap.parse_args()
    panel, refs = run_panel(Path(args.run)) if args.run else pubmedqa_panel(args.questions)
    n_texts = len(refs) + sum(len(v) for v in panel.values())
    words = np.array([len(t.split()) for v in panel.values() for t in v])
    print(f"{len(panel)} answer sets x {len(refs)} questions ({n_texts} texts); answer words median "
          f"{np.median(words):.0f}, 90th percentile {np.percentile(words, 90):.0f}")

    reference = resolve_encoder("minilm-256", {})
    candidates = [resolve_encoder("minilm", {}),
                  TextEncoder("minilm-64", spec=MINILM.model_copy(update={"max_length": 64,
                                                                           "batch_size": BATCH_SIZE}))]
    base, base_cpu, base_wall = similarities(reference, panel, refs)
    order = sorted(base, key=lambda n: -base[n].mean())
    print(f"reference {reference.name}: CPU {base_cpu:.1f} s, wall {base_wall:.1f} s")
    print("  model order: " + ", ".join(f"{n} {base[n].mean():.3f}" for n in order))
    verdicts = []
    for cand in candidates:
        sims, cpu, wall = similarities(cand, panel, refs)
        a = agreement(base, sims)
        holds = a["same_order"] and a["per_answer_pearson"] >= MIN_PER_ANSWER_R
        verdicts.append((cand.name, holds, base_cpu / cpu))
        print(f"{cand.name:10s} CPU {cpu:6.1f} s (x{base_cpu / cpu:.2f} faster), wall {wall:6.1f} s | "
              f"model means: Spearman {a['model_mean_spearman']:.3f}, same order {a['same_order']} | "
              f"per answer: Pearson {a['per_answer_pearson']:.3f}, Spearman {a['per_answer_spearman']:.3f} | "
              f"pair order {a['pair_order']:.3f} | ranking holds: {'yes' if holds else 'no'}")
    fastest = max((v for v in verdicts if v[1]), key=lambda v: v[2], default=None)
    print(f"default: {fastest[0] if fastest else reference.name} (the fastest candidate whose ranking holds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
