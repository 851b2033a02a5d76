"""models.yaml as a user writes it: simple for the simple case, strict about typos."""

from __future__ import annotations

import pytest

from runner.config import HFModel, parse_config
from runner.errors import ConfigError
from runner.plan import make_plan
from runner.prompts import PRESETS
from runner.questions import parse_questions
from tests.conftest import REPO, run_cli, write

DESIGN_SKETCH = """
name: oncology-panel
questions: questions/seed.jsonl
system_prompt: oncology-expert
output: s3://medbench/runs
generation: {max_new_tokens: 512, temperature: 0.0, seed: 0}
cluster:
  namespace: medbench
  image: registry.example.org/medbench-runner:0.1.0
models:
  - id: google/medgemma-27b-text-it
    quantization: 4bit
    gpus: 1
  - id: axiong/PMC_LLaMA_13B
  - id: stanford-crfm/BioMedLM
  - id: gpt-4o
    backend: openai
  - id: gemini-3-pro-preview
    backend: gemini
  - id: cambridgeltl/SapBERT-from-PubMedBERT-fulltext
    backend: embed
"""

QS = parse_questions(['{"question": "What is HER2?"}'], "q.jsonl")


def test_the_design_sketch_parses_with_sensible_defaults():
    cfg = parse_config(DESIGN_SKETCH)
    backends = [m.backend for m in cfg.models]
    assert backends == ["hf", "hf", "hf", "openai", "gemini", "embed"]
    medgemma = cfg.models[0]
    assert isinstance(medgemma, HFModel)
    assert medgemma.quantization == "4bit" and medgemma.batch_size == "auto"
    assert medgemma.model_dir == "google_medgemma-27b-text-it"
    assert cfg.models[5].resolved_pooling == "cls"  # SapBERT's card takes [CLS]


def test_api_backends_are_inferred_from_well_known_names():
    cfg = parse_config("questions: q.jsonl\nmodels:\n  - id: gpt-4o\n  - id: gemini-3-pro-preview\n")
    assert [m.backend for m in cfg.models] == ["openai", "gemini"]


def test_per_model_generation_overrides_only_what_it_names():
    cfg = parse_config("""
questions: q.jsonl
generation: {max_new_tokens: 256, temperature: 0.7, seed: 3}
models:
  - id: a/b
    generation: {max_new_tokens: 32}
  - id: c/d
""")
    a, c = (cfg.generation_for(m) for m in cfg.models)
    assert (a.max_new_tokens, a.temperature, a.seed) == (32, 0.7, 3)
    assert c.max_new_tokens == 256


def test_two_entries_writing_to_one_folder_are_rejected():
    with pytest.raises(ConfigError, match="distinct 'name'"):
        parse_config("questions: q.jsonl\nmodels:\n  - id: a/b\n  - id: a/b\n    scoring: loglikelihood\n")
    cfg = parse_config("questions: q.jsonl\nmodels:\n  - id: a/b\n  - id: a/b\n    name: a_b-ll\n")
    assert [m.model_dir for m in cfg.models] == ["a_b", "a_b-ll"]


def test_prompt_template_placeholders_are_checked():
    with pytest.raises(ConfigError, match=r"\{question\}"):
        parse_config("questions: q.jsonl\nprompt_template: 'Q: {qestion}'\nmodels:\n  - id: a/b\n")


@pytest.mark.parametrize(("value", "expected"), [
    ("oncology-expert", PRESETS["oncology-expert"]),
    ("cardiologist", PRESETS["cardiologist"]),
    ("none", None),
    ("You are a careful haematologist. Answer briefly.", "You are a careful haematologist. Answer briefly."),
])
def test_system_prompt_is_a_preset_inline_text_or_none(tmp_path, value, expected):
    cfg = parse_config(f"questions: q.jsonl\nsystem_prompt: {value}\nmodels:\n  - id: a/b\n",
                       base_dir=tmp_path)
    assert make_plan(cfg, QS).tasks[0].system_prompt == expected


def test_system_prompt_from_a_file_relative_to_the_config(tmp_path):
    write(tmp_path / "prompts" / "haem.txt", "You are a haematologist.\n")
    cfg = parse_config("questions: q.jsonl\nsystem_prompt: prompts/haem.txt\nmodels:\n  - id: a/b\n"
                       "  - id: c/d\n    system_prompt: none\n", base_dir=tmp_path)
    plan = make_plan(cfg, QS)
    assert [t.system_prompt for t in plan.tasks] == ["You are a haematologist.", None]
    assert plan.tasks[0].system_prompt_hash != plan.tasks[1].system_prompt_hash


def test_oncology_preset_keeps_the_original_persona():
    text = PRESETS["oncology-expert"].lower()
    for phrase in ("oncology", "breast cancer", "20 years", "evidence", "not personal medical advice",
                   "laboratory research"):
        assert phrase in text


def test_run_id_is_deterministic_and_changes_with_settings(tmp_path):
    text = "name: p\nquestions: q.jsonl\nmodels:\n  - id: a/b\n"
    one = make_plan(parse_config(text), QS).run_id
    assert one == make_plan(parse_config(text), QS).run_id
    assert one.startswith("p-")
    other = make_plan(parse_config(text + "    generation: {max_new_tokens: 5}\n"), QS).run_id
    assert other != one


def test_every_example_config_is_valid():
    examples = sorted((REPO / "examples").glob("*.yaml"))
    assert examples
    for path in examples:
        from runner.config import load_config

        load_config(path)


def test_prompts_command_lists_presets(capsys):
    assert run_cli("prompts") == 0
    out = capsys.readouterr().out
    for name in PRESETS:
        assert name in out
    assert run_cli("prompts", "cardiologist") == 0
    assert "cardiologist" in capsys.readouterr().out


# --- prompt_template in a file (issue 24 item 1) ---------------------------------------------------

TEMPLATED = """
name: tmpl
questions: questions.jsonl
output: out
system_prompt: none
models:
  - id: echo-a
    backend: echo
    prompt_template: prompts/mcq.txt
  - id: echo-b
    backend: echo
    prompt_template: "Q: {question} (inline)"
"""


def test_a_prompt_template_file_is_read_relative_to_models_yaml_and_recorded_as_text(project, capsys):
    """Templates live in files, as with lm-eval and inspect: a line without a brace names one."""
    write(project / "panel" / "questions.jsonl",
          '{"question": "Does tamoxifen block oestrogen receptors?"}\n')
    write(project / "panel" / "prompts" / "mcq.txt", "Clinical question: {question}\nAnswer yes or no.\n")
    write(project / "panel" / "models.yaml", TEMPLATED)

    assert run_cli("run", "panel/models.yaml") == 0
    (run,) = (project / "out").iterdir()
    assert (run / "echo-a" / "1.txt").read_text(encoding="utf-8") == (
        "Clinical question: Does tamoxifen block oestrogen receptors? Answer yes or no.")
    assert (run / "echo-b" / "1.txt").read_text(encoding="utf-8").startswith("Q: Does tamoxifen")
    # run.json holds the template itself (a pod has no such file), without the file's last newline.
    import json
    models = json.loads((run / "run.json").read_text(encoding="utf-8"))["config"]["models"]
    assert models[0]["prompt_template"] == "Clinical question: {question}\nAnswer yes or no."


def test_editing_the_template_file_changes_the_run_id(project, capsys):
    write(project / "questions.jsonl", '{"question": "What does HER2 amplification predict?"}\n')
    write(project / "prompts" / "mcq.txt", "Q: {question}\n")
    write(project / "models.yaml", TEMPLATED)
    assert run_cli("plan", "models.yaml") == 0
    first = capsys.readouterr().out.split(":")[0]
    write(project / "prompts" / "mcq.txt", "Question: {question}\n")
    assert run_cli("plan", "models.yaml") == 0
    assert capsys.readouterr().out.split(":")[0] != first


@pytest.mark.parametrize(("content", "says"), [
    ("Q: {question:>20}\n", "{question:>20} has a conversion or format spec"),
    ("Q: {qestion}\n", "prompt_template uses ['qestion']"),
    ("Answer briefly.\n", "prompt_template must contain {question}"),
])
def test_a_template_file_is_checked_like_an_inline_template(project, capsys, content, says):
    write(project / "questions.jsonl", '{"question": "What does HER2 amplification predict?"}\n')
    write(project / "prompts" / "mcq.txt", content)
    write(project / "models.yaml", TEMPLATED)

    assert run_cli("run", "models.yaml") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("error: models.yaml:8: models[0].prompt_template: prompts/mcq.txt: ")
    assert says in err[0]
    assert not (project / "out").exists()
