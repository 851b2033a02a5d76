"""Each model family gets the prompt it was trained on, and the manifest says which rule.

A panel of tiny random models, saved to folders and loaded by the real Hugging Face
backend, goes through ``launcher run`` once: a ChatML model keeps its system turn (``chat``),
Gemma 3 and a Gemma-2-style template that rejects system turns get the system prompt folded
into the first user turn (``chat-folded``), a GPT-2 without a template (BioMedLM) gets the
plain format, and a model named like PMC-LLaMA gets its published instruction format.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from transformers import AutoTokenizer

from tests.conftest import run_cli
from tests.tiny_models import TinyZoo, build_zoo

SYSTEM = "You are a careful oncologist. Cite the evidence you rely on."
OPEN_Q = "What does HER2 stand for?"
MC = {
    "id": "tam",
    "question": "Does tamoxifen reduce recurrence?",
    "context": "In a trial of 2,000 women, five years of tamoxifen halved recurrence.",
    "options": ["yes", "no", "maybe"],
    "answer": "yes",
}
# How a multiple-choice item reads to every model: context, question, lettered options.
MC_USER = (
    "Context:\nIn a trial of 2,000 women, five years of tamoxifen halved recurrence.\n\n"
    "Question: Does tamoxifen reduce recurrence?\n\n"
    "Options:\nA. yes\nB. no\nC. maybe\n\n"
    "Answer with the letter of the correct option, then explain briefly."
)

PMC_HEADER = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
)


@pytest.fixture(scope="session")
def zoo(tmp_path_factory) -> TinyZoo:
    return build_zoo(tmp_path_factory.mktemp("tiny-models"))


def panel(zoo: TinyZoo) -> list[dict]:
    entries = [
        {"id": "tiny/llama-chat", "path": str(zoo.llama_chat)},
        {"id": "google/medgemma-tiny-it", "path": str(zoo.gemma3)},
        {"id": "tiny/gemma2-style", "path": str(zoo.gemma2_style)},
        {"id": "stanford-crfm/BioMedLM-tiny", "path": str(zoo.gpt2)},
        {"id": "axiong/PMC_LLaMA_tiny", "path": str(zoo.pmc_llama)},
        {"id": "tiny/llama-chat", "name": "llama-nosys", "path": str(zoo.llama_chat),
         "system_prompt": "none"},
        {"id": "google/medgemma-tiny-it", "name": "gemma3-nosys", "path": str(zoo.gemma3),
         "system_prompt": "none"},
        {"id": "stanford-crfm/BioMedLM-tiny", "name": "gpt2-nosys", "path": str(zoo.gpt2),
         "system_prompt": "none"},
        {"id": "axiong/PMC_LLaMA_tiny", "name": "pmc-nosys", "path": str(zoo.pmc_llama),
         "system_prompt": "none"},
        {"id": "tiny/llama-chat", "name": "llama-forced-plain", "path": str(zoo.llama_chat),
         "prompt_format": "plain"},
    ]
    for e in entries:
        e["batch_size"] = 2
    return entries


@pytest.fixture(scope="module")
def run_dir(zoo, tmp_path_factory) -> Path:
    """One ``launcher run`` of the whole panel over an open and a multiple-choice question."""
    root = tmp_path_factory.mktemp("prompt-rules")
    (root / "questions.jsonl").write_text(
        json.dumps({"id": "her2", "question": OPEN_Q}) + "\n" + json.dumps(MC) + "\n"
    )
    config = {
        "name": "rules",
        "questions": "questions.jsonl",
        "system_prompt": SYSTEM,
        "output": str(root / "out"),
        "generation": {"max_new_tokens": 4},
        "models": panel(zoo),
    }
    (root / "models.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    assert run_cli("run", root / "models.yaml") == 0
    (run,) = [p for p in (root / "out").iterdir() if p.is_dir()]
    return run


def records(run_dir: Path, model_dir: str) -> dict[str, dict]:
    lines = (run_dir / model_dir / "responses.jsonl").read_text().splitlines()
    return {r["id"]: r for r in map(json.loads, lines)}


def manifest(run_dir: Path, model_dir: str) -> dict:
    return json.loads((run_dir / model_dir / "manifest.json").read_text())


def token_count(folder: Path, text: str, special: bool) -> int:
    tok = AutoTokenizer.from_pretrained(folder)
    return len(tok(text, add_special_tokens=special)["input_ids"])


# --- chat: the template keeps a system turn ----------------------------------------------------


def test_a_template_with_a_system_role_gets_the_system_prompt_as_its_own_turn(run_dir, zoo):
    m = manifest(run_dir, "tiny_llama-chat")
    assert m["status"] == "complete" and m["prompt_rule"] == "chat"
    rec = records(run_dir, "tiny_llama-chat")
    assert rec["her2"]["prompt"] == (
        f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
        f"<|im_start|>user\n{OPEN_Q}<|im_end|>\n<|im_start|>assistant\n"
    )
    assert rec["tam"]["prompt"] == (
        f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
        f"<|im_start|>user\n{MC_USER}<|im_end|>\n<|im_start|>assistant\n"
    )
    # The template carries its own special tokens: the prompt is not given a second set.
    assert rec["her2"]["input_tokens"] == token_count(zoo.llama_chat, rec["her2"]["prompt"], False)


# --- chat-folded: Gemma ------------------------------------------------------------------------


@pytest.mark.parametrize("model_dir", ["google_medgemma-tiny-it", "tiny_gemma2-style"])
def test_gemma_templates_get_the_system_prompt_folded_into_the_first_user_turn(run_dir, zoo, model_dir):
    # Gemma 3 folds a system turn by itself; the Gemma 2 template raises "System role not
    # supported". Both end with the same text, and the manifest says it was folded.
    m = manifest(run_dir, model_dir)
    assert m["status"] == "complete" and m["prompt_rule"] == "chat-folded"
    rec = records(run_dir, model_dir)
    assert rec["her2"]["prompt"] == (
        f"<bos><start_of_turn>user\n{SYSTEM}\n\n{OPEN_Q}<end_of_turn>\n<start_of_turn>model\n"
    )
    assert rec["tam"]["prompt"] == (
        f"<bos><start_of_turn>user\n{SYSTEM}\n\n{MC_USER}<end_of_turn>\n<start_of_turn>model\n"
    )
    # Exactly one <bos>: the one the template wrote.
    assert rec["her2"]["input_tokens"] == token_count(zoo.gemma3, rec["her2"]["prompt"], False)


def test_the_gemma2_style_template_really_rejects_a_system_turn(zoo):
    tok = AutoTokenizer.from_pretrained(zoo.gemma2_style)
    with pytest.raises(Exception, match="System role not supported"):
        tok.apply_chat_template([{"role": "system", "content": SYSTEM}, {"role": "user", "content": "hi"}],
                                tokenize=False)


# --- plain: no template (BioMedLM) -------------------------------------------------------------


def test_a_model_without_a_template_gets_the_plain_format(run_dir, zoo):
    m = manifest(run_dir, "stanford-crfm_BioMedLM-tiny")
    assert m["status"] == "complete" and m["prompt_rule"] == "plain"
    rec = records(run_dir, "stanford-crfm_BioMedLM-tiny")
    assert rec["her2"]["prompt"] == f"{SYSTEM}\n\n{OPEN_Q}\nAnswer:"
    assert rec["tam"]["prompt"] == f"{SYSTEM}\n\n{MC_USER}\nAnswer:"
    assert rec["her2"]["input_tokens"] == token_count(zoo.gpt2, rec["her2"]["prompt"], True)


def test_prompt_format_plain_overrides_a_chat_template(run_dir):
    assert manifest(run_dir, "llama-forced-plain")["prompt_rule"] == "plain"
    assert records(run_dir, "llama-forced-plain")["her2"]["prompt"] == f"{SYSTEM}\n\n{OPEN_Q}\nAnswer:"


# --- pmc-llama ---------------------------------------------------------------------------------


def test_pmc_llama_gets_its_published_instruction_input_response_format(run_dir, zoo):
    m = manifest(run_dir, "axiong_PMC_LLaMA_tiny")
    assert m["status"] == "complete" and m["prompt_rule"] == "pmc-llama"
    rec = records(run_dir, "axiong_PMC_LLaMA_tiny")
    assert rec["her2"]["prompt"] == (
        f"{PMC_HEADER}### Instruction:\n{SYSTEM}\n\n### Input:\n{OPEN_Q}\n\n### Response:"
    )
    assert rec["tam"]["prompt"] == (
        f"{PMC_HEADER}### Instruction:\n{SYSTEM}\n\n### Input:\n{MC_USER}\n\n### Response:"
    )
    # A Llama tokenizer adds its <s> to a plain prompt, once.
    with_bos = token_count(zoo.pmc_llama, rec["her2"]["prompt"], True)
    assert with_bos == token_count(zoo.pmc_llama, rec["her2"]["prompt"], False) + 1
    assert rec["her2"]["input_tokens"] == with_bos


# --- system_prompt: none -----------------------------------------------------------------------


def test_system_prompt_none_sends_no_system_text_under_any_rule(run_dir):
    expected = {
        "llama-nosys": ("chat", f"<|im_start|>user\n{OPEN_Q}<|im_end|>\n<|im_start|>assistant\n"),
        "gemma3-nosys": ("chat-folded",
                         f"<bos><start_of_turn>user\n{OPEN_Q}<end_of_turn>\n<start_of_turn>model\n"),
        "gpt2-nosys": ("plain", f"{OPEN_Q}\nAnswer:"),
        "pmc-nosys": ("pmc-llama", f"{PMC_HEADER}### Instruction:\nAnswer the following medical "
                                   f"question.\n\n### Input:\n{OPEN_Q}\n\n### Response:"),
    }
    for model_dir, (rule, prompt) in expected.items():
        m = manifest(run_dir, model_dir)
        assert m["prompt_rule"] == rule, model_dir
        assert m["system_prompt_hash"] is None, model_dir
        rec = records(run_dir, model_dir)
        assert rec["her2"]["prompt"] == prompt, model_dir
        assert "oncologist" not in json.dumps(rec), model_dir
    run_json = json.loads((run_dir / "run.json").read_text())
    assert run_json["system_prompts"]["llama-nosys"] is None
    assert run_json["system_prompts"]["tiny_llama-chat"] == SYSTEM


def test_every_model_of_the_panel_answered_every_question(run_dir, zoo):
    for entry in panel(zoo):
        model_dir = entry.get("name") or entry["id"].replace("/", "_")
        assert sorted(records(run_dir, model_dir)) == ["her2", "tam"], model_dir
        for n in (1, 2):
            assert (run_dir / model_dir / f"{n}.txt").is_file(), model_dir


# --- a rule that cannot apply ------------------------------------------------------------------


def test_prompt_format_chat_without_a_template_is_bad_input(zoo, tmp_path, capsys):
    (tmp_path / "q.jsonl").write_text(json.dumps({"question": OPEN_Q}) + "\n")
    config = {
        "questions": "q.jsonl",
        "output": str(tmp_path / "out"),
        "generation": {"max_new_tokens": 2},
        "models": [{"id": "stanford-crfm/BioMedLM-tiny", "path": str(zoo.gpt2), "prompt_format": "chat"}],
    }
    (tmp_path / "models.yaml").write_text(yaml.safe_dump(config))
    assert run_cli("run", tmp_path / "models.yaml") == 2
    err = capsys.readouterr().err
    assert "stanford-crfm/BioMedLM-tiny" in err and "no chat template" in err
    assert "Traceback" not in err
