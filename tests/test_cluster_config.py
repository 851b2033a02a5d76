"""The cluster-facing keys of models.yaml are checked when the file is read, not by the API server
after half a panel was submitted: one line naming the file, the line and the key, exit 2."""

from __future__ import annotations

import pytest

from runner.config import parse_config
from runner.config.backends import key_env_clashes
from runner.config.base import check_output_url
from runner.errors import ConfigError
from tests.conftest import run_cli, write

BASE = "questions: q.jsonl\noutput: s3://medbench/runs\n"


@pytest.mark.parametrize("text, line, where, expected", [
    ("cluster:\n  namespace: Oncology_Team\nmodels: [{id: gpt-4o}]\n", 4, "cluster.namespace",
     "expected a DNS-1123 label"),
    ("cluster:\n  queue: gpu queue\nmodels: [{id: gpt-4o}]\n", 4, "cluster.queue",
     "expected a LocalQueue name"),
    ("models:\n  - id: gpt-4o\n    placement: {queue: 'a/b'}\n", 5, "models[0].placement.queue",
     "expected a LocalQueue name"),
    ("models:\n  - id: gpt-4o\n    api_key_env: AWS_SECRET_ACCESS_KEY\n", 5, "models[0].api_key_env",
     "AWS_SECRET_ACCESS_KEY is a variable medbench sets itself"),
    ("models:\n  - id: gemini-3-pro-preview\n    api_key_env: MEDBENCH_GEMINI\n", 5, "models[0].api_key_env",
     "medbench sets itself"),
    ("models:\n  - id: gpt-4o\n    api_key_env: OPENAI-KEY\n", 5, "models[0].api_key_env",
     "expected an environment variable name"),
    ("models:\n  - id: gpt-4o\n    api_key_env: HF_TOKEN\n", 5, "models[0].api_key_env",
     "medbench sets itself"),
    ("cluster:\n  secrets: {openai: Team_OpenAI}\nmodels: [{id: gpt-4o}]\n", 4, "cluster.secrets.openai",
     "expected a Kubernetes object name"),
    ("cluster:\n  hf_cache_pvc: 'HF cache'\nmodels: [{id: gpt-4o}]\n", 4, "cluster.hf_cache_pvc",
     "expected a Kubernetes object name"),
    ("cluster:\n  gpu_type: H800\nmodels: [{id: gpt-4o}]\n", 4, "cluster.gpu_type",
     "expected one of A100-80GB"),
    ("models:\n  - id: org/m\n    resources: {memory: 64GB}\n", 5, "models[0].resources.memory",
     "expected a Kubernetes quantity such as 64Gi"),
    ("cluster:\n  gpu_memory: lots\nmodels: [{id: gpt-4o}]\n", 4, "cluster.gpu_memory",
     "expected a Kubernetes quantity"),
    ("cluster:\n  throughput: {org/m: 0}\nmodels: [{id: org/m}]\n", 4, "cluster.throughput", "above 0"),
])
def test_a_bad_cluster_key_is_one_line_naming_its_line(project, capsys, text, line, where, expected):
    write(project / "q.jsonl", '{"question": "q"}\n')
    write(project / "models.yaml", BASE + text)
    assert run_cli("render", "models.yaml") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: models.yaml:{line}: {where}: ") and expected in err


def test_a_bad_namespace_on_the_command_line_is_refused_too(project, capsys):
    write(project / "q.jsonl", '{"question": "q"}\n')
    write(project / "models.yaml", BASE + "models: [{id: gpt-4o}]\n")
    assert run_cli("render", "models.yaml", "-n", "[bold]Team") == 2
    assert capsys.readouterr().err.startswith("error: --namespace '[bold]Team': expected a DNS-1123 label")


@pytest.mark.parametrize("url", ["s3://medbench/../x", "s3://medbench/runs/../../etc", "s3://medbench//runs",
                                 "s3://medbench/./runs", "s3://Bad_Bucket/runs", "s3://../runs",
                                 "s3://medbench/runs\n/x"])
def test_output_urls_that_climb_out_of_their_prefix_are_refused(url):
    with pytest.raises(ValueError):
        check_output_url(url)


@pytest.mark.parametrize("url", ["s3://medbench/runs", "s3://medbench", "s3://medbench/runs/", "results",
                                 "/shared/results", "../results"])
def test_ordinary_outputs_pass(url):
    assert check_output_url(url) == url


def test_one_variable_cannot_hold_two_services_keys():
    with pytest.raises(ConfigError) as e:
        parse_config("questions: q.jsonl\nmodels:\n"
                     "  - {id: gpt-4o, api_key_env: LAB_KEY}\n"
                     "  - {id: gpt-4o-mini, api_key_env: LAB_KEY}\n"
                     "  - {id: gemini-3-pro-preview, api_key_env: LAB_KEY}\n")
    assert str(e.value).startswith(
        "models.yaml:5: models[2].api_key_env: LAB_KEY is also the key of models[0] (openai)")
    assert e.value.exit_code == 2 and "\n" not in str(e.value)
    fine = parse_config("questions: q.jsonl\nmodels:\n  - {id: gpt-4o}\n  - {id: gemini-3-pro-preview}\n")
    assert key_env_clashes(fine.models) == []
