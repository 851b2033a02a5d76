"""`launcher submit` checks the cluster is ready before it stages or creates anything.

A missing Secret or key, PVC, image pull Secret or bucket is one line each, all of them at once,
and nothing is sent but reads; ``--force`` skips the checks; what our role may not read is
reported as not checked rather than as a problem.
"""

from __future__ import annotations

import json

import pytest
import yaml

from tests.conftest import run_cli, write
from tests.fakes.hf_hub import hf_hub_fixture  # noqa: F401 - fixture
from tests.fakes.k8s_api import FakeKubernetes, admin_setup
from tests.fakes.s3 import moto_endpoint_fixture, s3_fixture  # noqa: F401 - fixtures

PANEL = """
name: ready
questions: q.jsonl
output: {output}
cluster:
  s3_endpoint: {endpoint}
  image_pull_secrets: [{pull}]
models:
  - id: gpt-4o
  - id: gemini-3-pro-preview
  - id: epfl-llm/meditron-7b
    dtype: bfloat16
"""


@pytest.fixture
def k8s(tmp_path, monkeypatch):
    fake = FakeKubernetes().start()
    admin_setup(fake)
    fake.apply({"kind": "Secret", "type": "kubernetes.io/dockerconfigjson", "metadata": {"name": "regcred"},
                "stringData": {".dockerconfigjson": "{}"}})
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump(fake.kubeconfig()))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    monkeypatch.setenv("MEDBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    try:
        yield fake
    finally:
        fake.stop()


def panel(project, s3, *, output: str | None = None, pull: str = "regcred") -> None:
    write(project / "q.jsonl", json.dumps({"question": "Which gene does trastuzumab target?"}) + "\n")
    write(project / "models.yaml", PANEL.format(output=output or s3.url(), endpoint=s3.endpoint, pull=pull))


def writes(fake: FakeKubernetes) -> list:
    return [r for r in fake.requests if r.method in ("POST", "PUT", "PATCH", "DELETE")]


def test_a_ready_cluster_passes_and_the_run_is_submitted(k8s, project, s3, capsys):
    panel(project, s3)
    assert run_cli("submit", "models.yaml") == 0
    assert len(k8s.jobs) == 3
    assert "preflight" not in capsys.readouterr().err
    job = next(iter(k8s.jobs.values()))
    assert job["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "regcred"}]


def test_every_problem_is_one_line_and_nothing_is_staged_or_created(k8s, project, s3, capsys):
    k8s.delete_object("Secret", "medbench", "medbench-openai")
    k8s.delete_object("Secret", "medbench", "medbench-gemini")
    k8s.apply({"kind": "Secret", "metadata": {"name": "medbench-gemini"}, "stringData": {"apikey": "x"}})
    k8s.delete_object("PersistentVolumeClaim", "medbench", "medbench-hf-cache")
    k8s.delete_object("Secret", "medbench", "medbench-s3")
    panel(project, s3, output="s3://no-such-bucket-here/runs", pull="ghcr-pull")

    assert run_cli("submit", "models.yaml") == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("error: the cluster is not ready for run ready-") and "--force" in err[0]
    problems = err[1:]
    expected = [
        "PersistentVolumeClaim medbench-hf-cache (cluster.hf_cache_pvc, the Hugging Face cache) does not "
        "exist",
        "Secret medbench-gemini has no key 'api-key' (GEMINI_API_KEY for gemini-3-pro-preview)",
        "Secret medbench-openai does not exist in namespace 'medbench' (OPENAI_API_KEY for gpt-4o): "
        "kubectl -n medbench create secret generic medbench-openai --from-literal=api-key=...",
        "Secret medbench-s3 does not exist in namespace 'medbench'",
        "image pull Secret ghcr-pull (cluster.image_pull_secrets) does not exist",
        "output s3://no-such-bucket-here/runs: ",
    ]
    assert len(problems) == len(expected), problems
    for want in expected:
        assert sum(want in line for line in problems) == 1, want
    assert all(line.startswith("error: ") for line in problems)
    assert any("it holds: apikey" in line for line in problems)  # the key names, never a value
    assert any("the S3 endpoint" in line and "takes keys" in line for line in problems)
    assert writes(k8s) == [] and k8s.jobs == {}
    assert s3.keys() == []


def test_force_skips_the_checks(k8s, project, s3, capsys):
    k8s.delete_object("Secret", "medbench", "medbench-openai")
    panel(project, s3)
    assert run_cli("submit", "models.yaml", "--force") == 0
    assert len(k8s.jobs) == 3


def test_what_the_role_may_not_read_is_not_checked_rather_than_a_problem(k8s, project, s3, capsys):
    # The medbench-launcher Role of k8s/rbac.yaml grants Jobs and pods only.
    k8s.forbidden |= {"secrets", "persistentvolumeclaims", "serviceaccounts", "namespaces"}
    k8s.objects.clear()
    panel(project, s3)
    assert run_cli("submit", "models.yaml") == 0
    err = capsys.readouterr().err
    assert "preflight: not checked, your role may not read them: ServiceAccounts, PersistentVolumeClaims, " \
           "Secrets" in err
    assert len(k8s.jobs) == 3


def test_a_gated_model_needs_the_hf_token_secret(k8s, hub, project, s3, capsys, monkeypatch):
    k8s.delete_object("Secret", "medbench", "medbench-hf")
    write(project / "q.jsonl", json.dumps({"question": "Is HER2 amplified in 20% of breast cancers?"}) + "\n")
    write(project / "models.yaml", f"""
        questions: q.jsonl
        output: {s3.url()}
        cluster: {{s3_endpoint: "{s3.endpoint}"}}
        models:
          - {{id: google/medgemma-27b-text-it, quantization: 4bit}}
          - {{id: stanford-crfm/BioMedLM}}
        """)
    assert run_cli("submit", "models.yaml") == 1
    [problem] = capsys.readouterr().err.splitlines()[1:]
    assert problem.startswith("error: Secret medbench-hf does not exist in namespace 'medbench' "
                              "(HF_TOKEN for google/medgemma-27b-text-it")
    assert "(google/medgemma-27b-text-it is gated)" in problem
    # Without the gated model the token is optional again: public models need none.
    write(project / "models.yaml", (project / "models.yaml").read_text().replace(
        "  - {id: google/medgemma-27b-text-it, quantization: 4bit}\n", ""))
    assert run_cli("submit", "models.yaml") == 0


def test_a_missing_namespace_is_the_only_line(k8s, project, s3, capsys):
    panel(project, s3)
    assert run_cli("submit", "models.yaml", "-n", "oncology") == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "namespace 'oncology' does not exist" in err[1]
