"""How long `launcher export` and `launcher compare` take on 50 runs x 10 models x 1,000 questions.

500,000 answers in the real storage layout (run.json with the benchmark's provenance,
questions.jsonl, and per model its records/NNNNNN.json, responses.jsonl and manifest.json;
the N.txt copies are left out: nothing here reads them), synthetic but realistic:

- 3 benchmarks (MedQA-like 4 options, MedMCQA-like 4 options, PubMedQA yes/no/maybe), each a
  pool of 2,000 questions built from the PubMedQA abstracts of ../shared/data/pubmedqa_200.jsonl;
  each run samples 1,000 of one benchmark, the same sample for four runs of it in a row, then
  a new one, so runs share all, or about half, of their questions;
- a panel that changes over 50 runs (one every two weeks): 14 models, 10 in each run, new
  revisions (a little better) replacing old ones half way, API models with per-answer prices;
- answers as long and varied as real ones (tests/report_fixtures.py's lengths and styles:
  a verdict, then sentences of the abstracts, median 45-300 words), a few errors;
- the newest run still in progress (two models running: records only, no responses.jsonl).

Timed, each as a user types it (a new ``launcher`` process): the first export (nothing
cached: neither the tables nor the options the answers chose), the same again (nothing
changed), after one run changed (a model rerun), the tables rebuilt for runs whose choices a
report (or an export) already cached in them, compare over all 50 runs (terminal, JSON, HTML)
and compare of two runs (flips).

    .venv/bin/python bench/bench_results.py [--keep DIR] [--runs 50] [--models 10] [--questions 1000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from runner.artefacts.records import ModelManifest, ResponseRecord, RunInfo, package_versions  # noqa: E402
from runner.questions import Question, dump_questions, load_questions  # noqa: E402
from tests.report_fixtures import benchmark_source  # noqa: E402

PUBMEDQA = REPO.parent / "shared" / "data" / "pubmedqa_200.jsonl"
LAUNCHER = REPO / ".venv" / "bin" / "launcher"
POOL = 2000
SYSTEM_PROMPT = "You are a careful clinician. Answer with the option letter first, then explain."
GENERATION = {"max_new_tokens": 512, "temperature": 0.0, "seed": 0}

#: (model id, backend, revisions over time, skill, median words, price per answer in USD or None)
PANEL = [
    ("google/medgemma-27b-text-it", "vllm", ["a1b2c3d", "e4f5a6b"], 0.72, 230, None),
    ("google/medgemma-4b-it", "hf", ["0c1d2e3"], 0.55, 120, None),
    ("axiong/PMC_LLaMA_13B", "hf", ["265afcd"], 0.45, 45, None),
    ("stanford-crfm/BioMedLM", "hf", ["3e1a2b9"], 0.40, 70, None),
    ("gpt-4o", "openai", ["gpt-4o-2024-08-06", "gpt-4o-2024-11-20"], 0.80, 180, 0.0041),
    ("gpt-4o-mini", "openai", ["gpt-4o-mini-2024-07-18"], 0.66, 150, 0.0003),
    ("gemini-3-pro-preview", "gemini", ["gemini-3-pro-preview-11-2025"], 0.83, 300, 0.0062),
    ("meta-llama/Llama-3.1-8B-Instruct", "vllm", ["0e9e39f"], 0.58, 210, None),
    ("Qwen/Qwen2.5-14B-Instruct", "vllm", ["cf98f3b"], 0.64, 260, None),
    ("mistralai/Mistral-7B-Instruct-v0.3", "hf", ["e0bc86c"], 0.50, 95, None),
    ("microsoft/Phi-3.5-mini-instruct", "hf", ["af0dfb8"], 0.52, 160, None),
    ("epfl-llm/meditron-7b", "hf", ["8d3e2d1"], 0.42, 60, None),
    ("BioMistral/BioMistral-7B", "hf", ["9a1b7c2"], 0.48, 110, None),
    ("claude-compatible-proxy", "openai", ["2025-06-01"], 0.78, 200, 0.0035),
]
BENCHMARKS = [("medqa", "MedQA (USMLE, 4 options)", 4), ("medmcqa", "MedMCQA", 4),
              ("pubmedqa", "PubMedQA", 3)]
VOCAB = ("tamoxifen", "letrozole", "trastuzumab", "cisplatin", "radiotherapy", "observation", "surgery",
         "metformin", "aspirin", "warfarin", "biopsy", "MRI", "colonoscopy", "mammography", "chemotherapy",
         "immunotherapy", "watchful waiting", "a beta-blocker", "an ACE inhibitor", "a statin")


def sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text.replace("\n", " ")) if len(s) > 20]


def pools(base: list[Question]) -> dict[str, list[Question]]:
    """Per benchmark, POOL distinct questions built from the abstracts."""
    rng = random.Random(7)
    out = {}
    for name, _title, n_opts in BENCHMARKS:
        items = []
        for i in range(POOL):
            q = base[i % len(base)]
            stem = rng.choice(sentences(q.context or q.question) or [q.question])
            if n_opts == 3:
                options = {"A": "yes", "B": "no", "C": "maybe"}
            else:
                picks = rng.sample(VOCAB, n_opts)
                options = {chr(65 + k): p for k, p in enumerate(picks)}
            gold = rng.choice(list(options))
            text = f"{stem} Which is best supported? (item {i})"
            items.append(Question(id=f"{name}-test-{i}", question=text,
                                  context=q.context if name == "pubmedqa" else None, options=options,
                                  answer=gold, meta={"benchmark": name, "split": "test", "row": i}))
        out[name] = items
    return out


def answer_text(rng: random.Random, model_id: str, q: Question, skill: float, median: int,
                pool: list[str]) -> str:
    """A model's answer: which option it picks mostly stays from run to run (greedy decoding on
    the same prompt), about one pick in ten is drawn again; its prose differs every time."""
    letters = list(q.options or {})
    gold = q.gold_letter
    target = min(420, max(3, int(rng.lognormvariate(math.log(median), 0.45))))
    habit = random.Random(f"{model_id}-{q.question}")
    r = habit.random() if rng.random() > 0.1 else rng.random()
    if r < 0.05:
        head = "It is difficult to give a definitive answer from the information given."
    else:
        pick = gold if r < 0.05 + skill else habit.choice([x for x in letters if x != gold])
        text = q.options[pick]
        head = rng.choice((f"**Answer: {pick}. {text}**", f"{text[0].upper()}{text[1:]}.",
                           f"The answer is ({pick}).", f"Final answer: {pick}"))
    parts, words = [head], len(head.split())
    while words < target:
        s = rng.choice(pool)
        parts.append(s)
        words += len(s.split())
    return " ".join(parts)


def write_run(root: Path, run_id: str, created: datetime, bench: tuple[str, str, int], seed: int,
              questions: list[Question], models: list[tuple[tuple, str]], pool: list[str],
              running: set[str]) -> None:
    run = root / run_id
    run.mkdir(parents=True)
    qjsonl = dump_questions(questions)
    (run / "questions.jsonl").write_text(qjsonl, encoding="utf-8")
    entries = [{"id": m[0], "backend": m[1], **({"prices": {"input": 2.5, "output": 10.0}} if m[5] else {})}
               for m, _rev in models]
    source = benchmark_source(questions, benchmark=bench[0], title=bench[1], rows_in_split=POOL,
                              n_questions=len(questions), limit=len(questions), seed=seed)
    info = RunInfo(run_id=run_id, name="panel", created_at=created.isoformat(timespec="seconds"),
                   config={"name": "panel", "questions": {"benchmark": bench[0]}, "system_prompt": "custom",
                           "generation": GENERATION, "models": entries},
                   system_prompts={m[0].replace("/", "_"): SYSTEM_PROMPT for m, _ in models},
                   questions_sha256=hashlib.sha256(qjsonl.encode()).hexdigest(), n_questions=len(questions),
                   versions=package_versions(), questions_source=source)
    (run / "run.json").write_text(info.model_dump_json(indent=2), encoding="utf-8")
    for (model_id, backend, _revs, skill, median, price), revision in models:
        model_dir = model_id.replace("/", "_")
        folder = run / model_dir
        (folder / "records").mkdir(parents=True)
        rng = random.Random(f"{run_id}-{model_dir}")
        lines, errors = [], 0
        partial = model_dir in running
        for q in questions[: len(questions) // 3] if partial else questions:
            err = "TimeoutError: no reply in 120 s after 5 attempts" if rng.random() < 0.004 else None
            text = None if err else answer_text(rng, model_id, q, skill, median, pool)
            out_tokens = None if text is None else int(len(text.split()) * 1.3)
            rec = ResponseRecord(
                id=q.id, index=q.index, prompt=[{"role": "system", "content": SYSTEM_PROMPT},
                                                {"role": "user", "content": q.question}],
                response=text, finish_reason=None if err else "stop", input_tokens=60 + len(q.question) // 4,
                output_tokens=out_tokens, latency_s=round(rng.uniform(0.4, 9.0), 3), error=err,
                attempts=5 if err else 1, cost_usd=price if (price and text) else None,
                model_version=revision if backend in ("openai", "gemini") else None)
            line = rec.model_dump_json(exclude_none=True)
            (folder / "records" / f"{q.index:06d}.json").write_text(line, encoding="utf-8")
            lines.append(line)
            errors += err is not None
        if not partial:
            (folder / "responses.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        manifest = ModelManifest(
            run_id=run_id, model=model_id, model_dir=model_dir, backend=backend, revision=revision,
            parameters={"id": model_id, "backend": backend, "generation": GENERATION,
                        "prompt_template": None, "system_prompt_sha256_16": hashlib.sha256(
                            SYSTEM_PROMPT.encode()).hexdigest()[:16]},
            status="running" if partial else "complete", total=len(questions), done=len(lines) - errors,
            errors=errors, started_at=created.isoformat(),
            finished_at=None if partial else created.isoformat())
        (folder / "manifest.json").write_text(manifest.model_dump_json(indent=2), encoding="utf-8")


def build(root: Path, pubmedqa: Path, n_runs: int, n_models: int, n_questions: int) -> list[str]:
    base = load_questions(pubmedqa)
    pool_sentences = [s for q in base for s in sentences((q.context or "") + " " + (q.reference or ""))]
    benches = pools(base)
    start = datetime(2024, 1, 8, 9, 0, tzinfo=UTC)
    ids = []
    for r in range(n_runs):
        rng = random.Random(r)
        bench = BENCHMARKS[r % len(BENCHMARKS)]
        # A benchmark's sample is drawn again every fourth run of it (about every six months).
        picked = sorted(random.Random(f"{bench[0]}-{r // 12}").sample(range(POOL), n_questions))
        questions = [benches[bench[0]][i].model_copy(update={"index": k + 1}) for k, i in enumerate(picked)]
        # The panel of the month: newer revisions from the middle of the series on.
        era = 0 if r < n_runs // 2 else 1
        chosen = rng.sample(PANEL, min(n_models, len(PANEL)))
        # A new revision answers a little better than the one it replaces.
        models = [((*m[:3], m[3] + 0.06 * min(era, len(m[2]) - 1), *m[4:]), m[2][min(era, len(m[2]) - 1)])
                  for m in chosen]
        created = start + timedelta(days=14 * r)
        run_id = f"panel-{created:%Y%m%d}-{r:03d}"
        last = r == n_runs - 1  # still running: two of its models not finished
        running = {m[0].replace("/", "_") for m, _ in models[:2]} if last else set()
        write_run(root, run_id, created, bench, r // 12, questions, models, pool_sentences, running)
        ids.append(run_id)
    return ids


def timed(*argv: str, env: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run([str(LAUNCHER), *argv], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"launcher {' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return wall, proc.stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", metavar="DIR",
                    help="write the runs here (and keep them) instead of a temporary folder")
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--models", type=int, default=10)
    ap.add_argument("--questions", type=int, default=1000)
    ap.add_argument("--pubmedqa", type=Path, default=PUBMEDQA,
                    help=f"the shared PubMedQA items (default {PUBMEDQA})")
    args = ap.parse_args()
    if not args.pubmedqa.exists():
        raise SystemExit(f"{args.pubmedqa} not found (it lives in shared/, beside the repository; "
                         "or give --pubmedqa)")
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-results-"))
    root, cache, out = work / "runs", work / "cache", work / "out"
    env = {**os.environ, "MEDBENCH_CACHE": str(cache), "PYTHONPATH": str(REPO)}
    try:
        if not root.exists():
            t0 = time.perf_counter()
            ids = build(root, args.pubmedqa, args.runs, args.models, args.questions)
            size = sum(p.stat().st_size for p in root.rglob("responses.jsonl"))
            print(f"{len(ids)} runs x {args.models} models x {args.questions} questions in {root} "
                  f"({size / 1e6:.0f} MB of responses.jsonl; written in {time.perf_counter() - t0:.0f} s)")
        ids = sorted(p.name for p in root.iterdir())
        # Cold: no tables in the launcher's cache, and no choices in the runs' own .cache (where
        # `launcher report` keeps the option each answer chose, and export reuses it).
        shutil.rmtree(cache, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
        for run_id in ids:
            shutil.rmtree(root / run_id / ".cache", ignore_errors=True)
        figures = {}
        export = ("export", str(root), "-o", str(out / "all.parquet"))
        figures["export, cold"], text = timed(*export, env=env)
        print(text.rstrip())
        figures["export, nothing changed"], _ = timed(*export, env=env)
        # One model of one run answered again (a rerun): its records and responses.jsonl rewritten.
        changed = root / ids[len(ids) // 2]
        folder = next(p for p in sorted(changed.iterdir()) if (p / "responses.jsonl").exists())
        record = folder / "records" / "000001.json"
        rec = json.loads(record.read_text())
        rec["response"] = "Answer: A. " + (rec.get("response") or "")
        record.write_text(json.dumps(rec))
        lines = (folder / "responses.jsonl").read_text().split("\n")
        lines[0] = json.dumps(rec)
        (folder / "responses.jsonl").write_text("\n".join(lines))
        figures["export, one run changed"], text = timed(*export, env=env)
        print(text.splitlines()[0])
        # The tables' cache lost, the runs reported before (their choices cached in the run).
        shutil.rmtree(cache, ignore_errors=True)
        figures["export, tables rebuilt, runs reported before"], _ = timed(*export, env=env)
        rows = 0
        import pyarrow.parquet as pq

        rows = pq.read_metadata(out / "all.parquet").num_rows
        mb = (out / "all.parquet").stat().st_size / 1e6
        figures["compare, 50 runs (terminal)"], text = timed("compare", str(root), env=env)
        print("\n".join(text.splitlines()[:3]))
        figures["compare, 50 runs --json"], _ = timed("compare", str(root), "--json", env=env)
        figures["compare, 50 runs --html"], _ = timed("compare", str(root), "--csv", "--html",
                                                       str(out / "leaderboard.html"), env=env)
        pair = [str(root / ids[-3]), str(root / ids[-6])]  # two runs of one benchmark, a month apart
        figures["compare, two runs (flips)"], text = timed("compare", *pair, env=env)
        print(f"\n{rows:,} rows in {out / 'all.parquet'} ({mb:.0f} MB)")
        for name, value in figures.items():
            print(f"  {name:45s} {value:7.1f} s")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
