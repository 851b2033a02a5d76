"""`launcher plan models.yaml`: before anything runs, what each model's Job asks for, how many
tokens go in and out, the GPU-hours and the API cost, and the total; every figure an estimate
that says what it rests on.
"""

from __future__ import annotations

import json

import huggingface_hub
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from launcher.estimate import table_speed
from runner.artefacts.records import ModelManifest
from runner.config import descriptor, parse_config
from runner.plan import make_plan
from runner.storage import open_storage
from tests.conftest import REPO, run_cli, write
from tests.fakes.hf_hub import hf_hub_fixture  # noqa: F401 - fixture

QUESTIONS = "".join(json.dumps({"question": q}) + "\n" for q in (
    "What is the mechanism of action of trastuzumab in HER2-positive breast cancer?",
    "Is [/] a valid TNM descriptor?\u2029No.",
    "Which germline variants confer the highest lifetime risk of ovarian cancer?",
    "Summarise the KEYNOTE-522 trial for a patient: " + "neoadjuvant pembrolizumab " * 40,
))


@pytest.fixture
def isolated(project, monkeypatch, tmp_path):
    monkeypatch.setenv("MEDBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "200")
    write(project / "q.jsonl", QUESTIONS)
    return project


def plan_json(capsys, *argv: str) -> dict:
    assert run_cli("plan", *argv, "--json") == 0
    return json.loads(capsys.readouterr().out)


def test_plan_of_the_example_panel_prints_the_table_and_the_total(hub, isolated, capsys, monkeypatch):
    # A wide terminal: on 80 columns (what a worker process without one gets) the ids fold.
    monkeypatch.setattr("launcher.commands.plan.console.width", 200)
    monkeypatch.setenv("HF_TOKEN", "hf_reader")
    hub.tokens.add("hf_reader")
    example = REPO / "examples" / "oncology-panel.yaml"
    assert run_cli("plan", example) == 0
    out = capsys.readouterr().out
    for model in ("google/medgemma-27b-text-it", "axiong/PMC_LLaMA_13B", "stanford-crfm/BioMedLM", "gpt-4o",
                  "gemini-3-pro-preview", "cambridgeltl/SapBERT-from-PubMedBERT-fulltext"):
        assert model in out
    assert "1 × A100-80GB, 8 CPU" in out and "500m CPU, 1Gi" in out and "total" in out
    openai_prices = descriptor("openai").prices
    assert openai_prices is not None
    assert "(estimates)" in out and f"API prices as published on {openai_prices.as_of}" in out
    # The LLMs run on vLLM: their time rests on vLLM's speed table, and the note says so.
    assert "≈" in out and "≤" in out and "speed table of vLLM's engine" in out

    data = plan_json(capsys, str(example))
    assert data["estimates"] is True and data["questions"] == 30
    by_model = {m["model"]: m for m in data["models"]}
    gpt = by_model["gpt-4o"]
    assert gpt["output_tokens"] == 30 * 512 and gpt["output_basis"] == "max_new_tokens"
    assert gpt["api_cost"] == pytest.approx((gpt["input_tokens"] * 2.50 + gpt["output_tokens"] * 10.00) / 1e6)
    gemini = by_model["gemini-3-pro-preview"]
    assert gemini["api_cost"] == pytest.approx(
        (gemini["input_tokens"] * 2 + gemini["output_tokens"] * 12) / 1e6)
    assert data["api_cost_usd"] == pytest.approx(round(gpt["api_cost"] + gemini["api_cost"], 4))
    medgemma = by_model["google/medgemma-27b-text-it"]
    assert medgemma["gpus"] == 1 and medgemma["sizing"] == "the Hub's safetensors metadata, cached"
    # GPU-hours: output tokens over vLLM's table speed for 27B in 4 bits on an A100, plus the prompts.
    vllm = descriptor("vllm").local
    assert vllm is not None
    speed = table_speed(vllm, 27_009_000_000, "A100-80GB", "4bit")
    expected = (medgemma["output_tokens"] / speed + medgemma["input_tokens"] / (speed * 20)) / 3600
    assert medgemma["gpu_hours"] == pytest.approx(expected, rel=0.01)
    assert data["gpu_hours"] == pytest.approx(sum(m["gpu_hours"] for m in data["models"]), abs=1e-3)
    assert by_model["cambridgeltl/SapBERT-from-PubMedBERT-fulltext"]["gpu_hours"] == 0


def test_an_entrys_prices_override_the_table_and_an_unknown_api_model_says_so(isolated, capsys):
    write(isolated / "models.yaml", """
        questions: q.jsonl
        output: s3://medbench/runs
        cluster: {gpu_hour_price: 3.0, throughput: {org/oncollm-7b: 250}}
        models:
          - id: gpt-4o
            prices: {input_per_million: 1.0, output_per_million: 2.0}
          - id: gpt-4o-mini-2024-07-18
          - id: gpt-9-preview
          - id: org/oncollm-7b
        """)
    data = plan_json(capsys, "models.yaml")
    by = {m["model"]: m for m in data["models"]}
    gpt = by["gpt-4o"]
    assert gpt["price_basis"] == "its entry's prices"
    assert gpt["api_cost"] == pytest.approx((gpt["input_tokens"] * 1.0 + gpt["output_tokens"] * 2.0) / 1e6)
    assert by["gpt-4o-mini-2024-07-18"]["price_basis"] == \
        f"price table of {descriptor('openai').prices.as_of}"
    assert by["gpt-4o-mini-2024-07-18"]["api_cost"] == pytest.approx(
        (by["gpt-4o-mini-2024-07-18"]["input_tokens"] * 0.15 + 4 * 512 * 0.60) / 1e6)
    assert by["gpt-9-preview"]["api_cost"] is None and data["unpriced"] == ["gpt-9-preview"]
    local = by["org/oncollm-7b"]
    assert local["speed_basis"].startswith("250 output tokens/s a pod (cluster.throughput)")
    assert local["gpu_cost"] == pytest.approx(local["gpu_hours"] * 3.0)

    assert run_cli("plan", "models.yaml") == 0
    out = capsys.readouterr().out
    assert "gpt-9-preview: no price known; add prices: to its entry" in out and "+ ?" in out
    assert "GPU cost: GPU-hours × cluster.gpu_hour_price" in out


def test_a_cached_tokenizer_counts_input_tokens_exactly(hub, isolated, capsys):
    tok = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    hub.add("org/oncollm-7b", {"config.json": {"model_type": "llama"},
                               "tokenizer.json": tok.to_str().encode()})
    # Once the model has been used on this machine its tokenizer sits in the Hugging Face cache.
    huggingface_hub.hf_hub_download("org/oncollm-7b", "tokenizer.json", endpoint=hub.url)
    write(isolated / "models.yaml", "questions: q.jsonl\nsystem_prompt: none\noutput: s3://medbench/runs\n"
          "models:\n  - {id: org/oncollm-7b}\n  - {id: gpt-4o}\n")
    data = plan_json(capsys, "models.yaml")
    local, api = data["models"]
    assert local["input_exact"] is True and local["tokenizer"] == "tokenizer of org/oncollm-7b"
    plan = make_plan(parse_config((isolated / "models.yaml").read_text(), base_dir=isolated))
    words = sum(len(tok.encode(q.question, add_special_tokens=False).ids) for q in plan.questions)
    assert local["input_tokens"] == words + 16 * len(plan.questions)  # plus the chat template's share
    assert api["input_exact"] is False and "4 characters a token" in api["tokenizer"]


def earlier_run(plan, task, hardware: dict, *, answers: int, output_tokens: int, tokens_per_s: float) -> None:
    """The manifest a run of this plan's model left in ./out, measured on ``hardware``."""
    open_storage("out").write_text(f"{plan.run_id}/{task.model_dir}/manifest.json", ModelManifest(
        run_id=plan.run_id, model=task.spec.id, model_dir=task.model_dir, backend=task.spec.backend,
        status="running", params_hash=task.params_hash(), total=4, done=answers, hardware=hardware,
        throughput={"answers": answers, "output_tokens": output_tokens, "output_tokens_per_s": tokens_per_s},
    ).model_dump_json())


def test_a_measured_run_replaces_max_new_tokens_and_the_table(isolated, capsys):
    write(isolated / "models.yaml", """
        questions: q.jsonl
        output: out
        models:
          - {id: org/oncollm-7b}
          - {id: org/other-13b}
        """)
    plan = make_plan(parse_config((isolated / "models.yaml").read_text(), base_dir=isolated))
    task = plan.task("org_oncollm-7b")
    # An earlier attempt at this very run, on the A100 its Job gets, answered 3 questions, 90
    # tokens each at 300 tokens/s.
    earlier_run(plan, task, {"device": "cuda", "gpus": ["NVIDIA A100-SXM4-80GB"]},
                answers=3, output_tokens=270, tokens_per_s=300.0)
    data = plan_json(capsys, "models.yaml")
    measured, other = data["models"]
    assert measured["output_tokens"] == 90 * 4
    assert measured["output_basis"] == f"measured in run {plan.run_id}"
    assert measured["speed_basis"].startswith(
        f"300 output tokens/s a pod (measured in run {plan.run_id} on 1 × NVIDIA A100-SXM4-80GB)")
    assert other["output_basis"] == "max_new_tokens" and other["output_tokens"] == 512 * 4
    assert run_cli("plan", "models.yaml", "--no-history") == 0
    assert "measured in run" not in capsys.readouterr().out


def test_plan_prints_model_ids_as_text_not_markup(isolated, capsys):
    write(isolated / "models.yaml", """
        questions: q.jsonl
        output: s3://medbench/runs
        models:
          - {id: "org/[bold]onco[/]-7b", name: "[red]onco-7b"}
          - {id: "gpt-4o", name: "[bold]gpt"}
        """)
    assert run_cli("plan", "models.yaml") == 0
    out = capsys.readouterr().out
    assert "org/[bold]onco[/]-7b" in out and "\x1b[" not in out


def test_a_laptop_run_does_not_size_a_gpu_job_and_the_note_names_the_table(isolated, capsys):
    write(isolated / "models.yaml", """
        questions: q.jsonl
        output: out
        models:
          - {id: org/oncollm-7b}
        """)
    plan = make_plan(parse_config((isolated / "models.yaml").read_text(), base_dir=isolated))
    task = plan.tasks[0]
    # The quickstart ran this model on a laptop's CPU: 11 tokens a second, 80 tokens an answer.
    earlier_run(plan, task, {"device": "cpu", "threads": 2}, answers=4, output_tokens=320, tokens_per_s=11.0)
    data = plan_json(capsys, "models.yaml")
    (model,) = data["models"]
    assert model["job"].startswith("1 × A100-80GB")
    # Answer lengths carry over; the laptop's speed does not: the Job's time is the table's.
    assert model["output_tokens"] == 80 * 4 and model["output_basis"] == f"measured in run {plan.run_id}"
    hf = descriptor("hf").local
    assert hf is not None
    assert model["speed_from"] == "table"
    speed = table_speed(hf, 7_000_000_000, "A100-80GB", "none")
    assert model["speed_basis"].startswith(
        f"{speed:,.0f} output tokens/s a pod (transformers' batched generate")
    assert model["gpu_hours"] == pytest.approx((320 / speed + model["input_tokens"] / (speed * 20)) / 3600)

    assert run_cli("plan", "models.yaml") == 0
    out = " ".join(capsys.readouterr().out.split())
    assert (f"run {plan.run_id} measured 11 output tokens/s on CPU, not on this Job's 1 × A100-80GB: "
            "not used") in out
    assert "time and GPU-hours of org/oncollm-7b: the speed table of transformers' batched generate" in out


def test_a_loglikelihood_model_generates_nothing_and_vllm_jobs_get_vllms_tables(isolated, capsys):
    write(isolated / "q.jsonl", "".join(json.dumps({"question": f"Q{i}: does it work?", "options": {
        "A": "yes", "B": "no", "C": "maybe"}}) + "\n" for i in range(4)))
    write(isolated / "models.yaml", """
        questions: q.jsonl
        output: s3://medbench/runs
        models:
          - {id: org/oncollm-7b, scoring: loglikelihood}
          - {id: org/oncollm-7b, backend: vllm, name: on-vllm}
        """)
    data = plan_json(capsys, "models.yaml", "--no-history")
    scored, generated = data["models"]
    # Scoring ranks the options: no tokens are generated, and the time is the prompts, once an option.
    assert scored["output_tokens"] == 0 and scored["output_basis"] == ""
    hf, vllm = descriptor("hf").local, descriptor("vllm").local
    assert hf is not None and vllm is not None
    speed = table_speed(hf, 7_000_000_000, "A100-80GB", "none")
    assert scored["gpu_hours"] == pytest.approx(3 * scored["input_tokens"] / (speed * 20) / 3600)
    # The vLLM entry is timed with vLLM's own speed table, not transformers'.
    vllm_speed = table_speed(vllm, 7_000_000_000, "A100-80GB", "none")
    assert generated["speed_basis"].startswith(f"{vllm_speed:,.0f} output tokens/s a pod (vLLM's engine")
    assert generated["output_tokens"] == 512 * 4

    assert run_cli("plan", "models.yaml", "--no-history") == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "org/oncollm-7b: scoring: loglikelihood generates no tokens" in out
