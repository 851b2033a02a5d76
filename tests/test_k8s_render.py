"""`launcher render`: the Jobs a submit would create, as YAML, checked against the Kubernetes schema.

The manifests are what the cluster sees, so these tests read them the way the API server and the
kubelet would: strict schema validation, the pod contract (command, environment, Secrets by
reference), placement, and names that stay valid for ids of any length.
"""

from __future__ import annotations

import os
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from launcher.k8s.names import MAX_JOB_NAME, is_dns_label, is_label_value, job_name, label_value
from launcher.k8s.render import ANN_SPEC_HASH, RenderOptions, render_jobs, spec_hash
from runner.config import load_config, parse_config
from runner.plan import make_plan
from tests.conftest import REPO, run_cli, write

EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
# The oldest release with every Job field we use GA (backoffLimitPerIndex: 1.33) and the newest
# schema kubernetes-validate ships, which is what current clusters run.
K8S_VERSIONS = ["1.33", kubernetes_validate.latest_version()]


def jobs_for(text: str, tmp_path: Path, options: RenderOptions | None = None) -> list[dict]:
    write(tmp_path / "q.jsonl", '{"question": "Is aspirin an NSAID?"}\n{"question": "What is HbA1c?"}\n')
    cfg = parse_config(text, base_dir=tmp_path)
    return render_jobs(make_plan(cfg), options)


def env_of(job: dict) -> dict[str, dict]:
    return {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}


def container(job: dict) -> dict:
    return job["spec"]["template"]["spec"]["containers"][0]


PANEL = """
name: panel
questions: q.jsonl
output: s3://bucket/runs
cluster:
  namespace: research
  image: reg.example/runner:1.2.3
  cpu_image: reg.example/runner-cpu:1.2.3
  s3_endpoint: http://minio.minio:9000
  queue: gpu-queue
  tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
  secrets: {openai: team-openai}
models:
  - id: google/medgemma-27b-text-it
    quantization: 4bit
    gpus: 2
  - id: gpt-4o
    backend: openai
    placement: {tolerations: [], priority_class: low}
  - id: gemini-3-pro-preview
    backend: gemini
  - id: cambridgeltl/SapBERT-from-PubMedBERT-fulltext
    backend: embed
    resources: {memory: 4Gi}
  - id: echo-check
    backend: echo
    shards: 3
"""


# --- schema --------------------------------------------------------------------------------------


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_example_renders_jobs_that_pass_strict_schema_validation(example, version):
    plan = make_plan(load_config(example))
    jobs = render_jobs(plan)
    assert len(jobs) == len(plan.tasks)
    for job in jobs:
        kubernetes_validate.validate(job, version, strict=True)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_cluster_setup_manifests_pass_strict_validation_and_kustomize_lists_real_files(version):
    k8s = REPO / "k8s"
    kustomization = yaml.safe_load((k8s / "kustomization.yaml").read_text())
    assert "secrets.example.yaml" not in kustomization["resources"]  # placeholders never applied
    for name in kustomization["resources"] + ["secrets.example.yaml"]:
        for doc in yaml.safe_load_all((k8s / name).read_text()):
            kubernetes_validate.validate(doc, version, strict=True)
    kueue = yaml.safe_load((k8s / "kueue" / "kustomization.yaml").read_text())
    kinds = {yaml.safe_load((k8s / "kueue" / f).read_text())["kind"] for f in kueue["resources"]}
    assert kinds == {"ResourceFlavor", "ClusterQueue", "LocalQueue"}


def test_example_secrets_hold_placeholders_only():
    for doc in yaml.safe_load_all((REPO / "k8s" / "secrets.example.yaml").read_text()):
        assert doc["kind"] == "Secret" and "data" not in doc
        assert all(v.startswith("REPLACE_WITH_") for v in doc["stringData"].values())


def test_launcher_role_is_least_privilege():
    docs = list(yaml.safe_load_all((REPO / "k8s" / "rbac.yaml").read_text()))
    role = next(d for d in docs if d["kind"] == "Role")
    granted = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"]
               for r in rule["resources"] for v in rule["verbs"]}
    assert not any(r == "secrets" for _, r, _ in granted)
    assert not any("*" in part for triple in granted for part in triple)
    assert {("batch", "jobs", "create"), ("batch", "jobs", "delete"), ("", "pods/log", "get")} <= granted
    assert not any(v in ("patch", "update", "escalate", "bind") for _, _, v in granted)
    bound = [d for d in docs if d["kind"] == "RoleBinding"]
    assert all(s.get("name") != "medbench-runner" for b in bound for s in b["subjects"])


# --- the Job -------------------------------------------------------------------------------------


def test_a_gpu_model_gets_a_guaranteed_gpu_pod_with_shm_and_the_hf_cache(tmp_path):
    job = jobs_for(PANEL, tmp_path)[0]
    spec, pod, c = job["spec"], job["spec"]["template"]["spec"], container(job)
    assert job["metadata"]["namespace"] == "research"
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    assert spec["backoffLimit"] == 3 and spec["ttlSecondsAfterFinished"] == 86400
    assert "activeDeadlineSeconds" not in spec
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    assert c["image"] == "reg.example/runner:1.2.3" and c["command"] == ["runner"]
    # gpus: 2 as written; CPU and memory sized for two GPUs and 27B weights passing through the pod
    # (render_jobs alone reads nothing: the size written in the id). Guaranteed QoS.
    res = c["resources"]
    assert res["requests"] == res["limits"]
    assert res["requests"]["nvidia.com/gpu"] == "2" and res["requests"]["cpu"] == "12"
    assert int(res["requests"]["memory"].removesuffix("Gi")) * 2**30 > 27e9 * 2
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"] == {"medium": "Memory", "sizeLimit": "8Gi"}
    assert volumes[mounts["/cache"]]["persistentVolumeClaim"]["claimName"] == "medbench-hf-cache"
    env = env_of(job)
    assert env["HF_HOME"]["value"] == "/cache/huggingface"
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_pod_failure_policy_fails_at_once_on_bad_input_and_ignores_disruptions(tmp_path):
    for job in jobs_for(PANEL, tmp_path):
        rules = job["spec"]["podFailurePolicy"]["rules"]
        assert {"action": "FailJob", "onExitCodes": {"containerName": "runner", "operator": "In",
                                                      "values": [2]}} in rules
        assert {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget",
                                                          "status": "True"}]} in rules


def test_pods_are_locked_down(tmp_path):
    for job in jobs_for(PANEL, tmp_path):
        pod = job["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        sc = container(job)["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
        # /tmp is a scratch volume, so the API pods' root filesystem can be read-only (the runner
        # keeps its log in /tmp: tests/test_containers.py runs them so).
        mounts = {m["mountPath"]: m["name"] for m in container(job)["volumeMounts"]}
        assert {"name": mounts["/tmp"], "emptyDir": {}} in pod["volumes"]
        cpu_pod = container(job)["image"] == "reg.example/runner-cpu:1.2.3"
        assert sc["readOnlyRootFilesystem"] is cpu_pod


def test_api_models_get_the_cpu_image_no_gpu_and_only_their_own_key(tmp_path):
    jobs = {j["metadata"]["annotations"]["medbench.io/model-dir"]: j for j in jobs_for(PANEL, tmp_path)}
    gpt, gemini = jobs["gpt-4o"], jobs["gemini-3-pro-preview"]
    assert container(gpt)["image"] == "reg.example/runner-cpu:1.2.3"
    assert "nvidia.com/gpu" not in str(container(gpt)["resources"])
    assert container(gpt)["resources"] == {"requests": {"cpu": "500m", "memory": "1Gi"},
                                           "limits": {"memory": "1Gi"}}
    env = env_of(gpt)
    assert env["OPENAI_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "team-openai", "key": "api-key"}
    assert "GEMINI_API_KEY" not in env and "HF_TOKEN" not in env
    assert env_of(gemini)["GEMINI_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "medbench-gemini"
    assert "OPENAI_API_KEY" not in env_of(gemini)
    # The model's placement replaces the file's key by key: no tolerations, its own priority.
    assert "tolerations" not in gpt["spec"]["template"]["spec"]
    assert gpt["spec"]["template"]["spec"]["priorityClassName"] == "low"
    assert gemini["spec"]["template"]["spec"]["tolerations"]
    # Encoders stay on CPU, on the runner image; the model's memory over what sizing gave it.
    sap = jobs["cambridgeltl_SapBERT-from-PubMedBERT-fulltext"]
    assert container(sap)["resources"]["requests"] == {"cpu": "2", "memory": "4Gi"}
    assert "nvidia.com/gpu" not in str(container(sap)["resources"])
    assert "HF_TOKEN" in env_of(sap) and "OPENAI_API_KEY" not in env_of(sap)


def test_the_pod_learns_run_and_model_from_its_environment(tmp_path):
    plan_jobs = jobs_for(PANEL, tmp_path)
    for job in plan_jobs:
        env = env_of(job)
        assert env["MEDBENCH_OUTPUT"]["value"] == "s3://bucket/runs"
        assert env["MEDBENCH_RUN_ID"]["value"] == job["metadata"]["annotations"]["medbench.io/run-id"]
        assert env["MEDBENCH_MODEL"]["value"] == job["metadata"]["annotations"]["medbench.io/model-dir"]
        assert env["AWS_ENDPOINT_URL"]["value"] == "http://minio.minio:9000"
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert env[key]["valueFrom"]["secretKeyRef"]["name"] == "medbench-s3"
        # No questions in the manifest: the pod reads them from storage (no ConfigMap size limit).
        assert "Is aspirin" not in yaml.safe_dump(job)


def test_echo_models_and_local_output_need_no_secrets(tmp_path):
    text = "questions: q.jsonl\noutput: /shared/results\nmodels:\n  - {id: e, backend: echo}\n"
    [job] = jobs_for(text, tmp_path, RenderOptions(output_pvc="nfs-results", output_path="/shared/results"))
    assert not [e for e in container(job)["env"] if "valueFrom" in e]
    mounts = {m["mountPath"]: m["name"] for m in container(job)["volumeMounts"]}
    pod = job["spec"]["template"]["spec"]
    vol = next(v for v in pod["volumes"] if v["name"] == mounts["/shared/results"])
    assert vol["persistentVolumeClaim"]["claimName"] == "nfs-results"
    assert env_of(job)["MEDBENCH_OUTPUT"]["value"] == "/shared/results"


def test_shards_make_an_indexed_job(tmp_path):
    job = jobs_for(PANEL, tmp_path)[-1]
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == 3
    assert spec["backoffLimitPerIndex"] == 3 and "backoffLimit" not in spec
    assert env_of(job)["MEDBENCH_SHARDS"]["value"] == "3"
    single = jobs_for(PANEL, tmp_path)[0]
    assert "completionMode" not in single["spec"] and "MEDBENCH_SHARDS" not in env_of(single)


def test_rendering_is_pure_and_the_hash_covers_the_spec(tmp_path):
    a, b = jobs_for(PANEL, tmp_path), jobs_for(PANEL, tmp_path)
    assert a == b
    assert all(j["metadata"]["annotations"][ANN_SPEC_HASH] == spec_hash(j) for j in a)
    other = jobs_for(PANEL.replace("runner:1.2.3", "runner:1.2.4"), tmp_path)
    assert [j["metadata"]["name"] for j in other] == [j["metadata"]["name"] for j in a]
    hashes = [j["metadata"]["annotations"][ANN_SPEC_HASH] for j in (a[0], other[0])]
    assert hashes[0] != hashes[1]


# --- names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_id", [
    "x" * 200,  # the longest id a folder name allows
    "Org/Model_With.Odd+Chars@v1:latest",
    "-" * 10 + "Z",
    "a",
    "Ünïcödé/模型",
])
def test_names_are_valid_for_ids_of_any_length_and_alphabet(tmp_path, model_id):
    text = f"name: {'r' * 120}\nquestions: q.jsonl\nmodels:\n  - {{id: {model_id!r}, backend: echo}}\n"
    [job] = jobs_for(text, tmp_path)
    name = job["metadata"]["name"]
    assert is_dns_label(name) and len(name) <= MAX_JOB_NAME
    assert all(is_label_value(v) for v in job["metadata"]["labels"].values())
    kubernetes_validate.validate(job, K8S_VERSIONS[-1], strict=True)


def test_ids_differing_only_at_the_end_get_different_names():
    base = "org/" + "m" * 200
    names = {job_name("run-0123456789", base + suffix) for suffix in ("a", "b", "-a", "_a", "A")}
    assert len(names) == 5
    labels = {label_value(base + s) for s in ("a", "b")}
    assert len(labels) == 2 and all(len(v) <= 63 for v in labels)
    assert job_name("run-1", "m") == job_name("run-1", "m")  # deterministic: resubmits find their Job
    assert job_name("run-1", "m") != job_name("run-2", "m")


def test_short_names_stay_readable():
    assert job_name("oncology-panel-1a2b3c4d5e", "gpt-4o").startswith("oncology-panel-1a2b3c4d5e-gpt-4o-")
    assert label_value("google_medgemma-27b-text-it") == "google_medgemma-27b-text-it"


# --- the command ---------------------------------------------------------------------------------


SECRETS_ENV = {
    "OPENAI_API_KEY": "sk-test-OPENAI-do-not-leak-1234567890",
    "GEMINI_API_KEY": "AIza-test-GEMINI-do-not-leak-0987",
    "HF_TOKEN": "hf_test_TOKEN_do_not_leak_5555",
    "AWS_ACCESS_KEY_ID": "AKIATESTDONOTLEAK77",
    "AWS_SECRET_ACCESS_KEY": "test/SECRET/access+key/do-not-leak",
}


def test_no_secret_value_from_the_environment_reaches_any_manifest(tmp_path, monkeypatch, capsys):
    for k, v in SECRETS_ENV.items():
        monkeypatch.setenv(k, v)
    write(tmp_path / ".env", "".join(f"{k}={v}\n" for k, v in SECRETS_ENV.items()))
    monkeypatch.chdir(tmp_path)  # a .env here is loaded by the launcher, as on a laptop
    write(tmp_path / "q.jsonl", '{"question": "q"}\n')
    write(tmp_path / "panel.yaml", PANEL)
    rendered = []
    for cfg in [*EXAMPLES, tmp_path / "panel.yaml"]:
        assert run_cli("render", cfg, "-o", tmp_path / "out" / cfg.stem) == 0
        rendered += [p.read_text() for p in (tmp_path / "out" / cfg.stem).glob("*.yaml")]
        assert run_cli("render", cfg) == 0
        rendered.append(capsys.readouterr().out)
    assert len(rendered) > 2 * len(EXAMPLES)
    blob = "\n".join(rendered)
    assert "secretKeyRef" in blob
    for value in SECRETS_ENV.values():
        assert value not in blob


def test_render_prints_multi_document_yaml_and_touches_nothing(project, capsys):
    write(project / "q.jsonl", '{"question": "q"}\n')
    write(project / "models.yaml", PANEL)
    before = sorted(p.name for p in project.iterdir())
    assert run_cli("render", "models.yaml") == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["kind"] for d in docs] == ["Job"] * 5
    assert sorted(p.name for p in project.iterdir()) == before

    assert run_cli("render", "models.yaml", "-o", "manifests", "-n", "elsewhere") == 0
    files = sorted((project / "manifests").glob("*.yaml"))
    assert len(files) == 5
    assert {yaml.safe_load(f.read_text())["metadata"]["namespace"] for f in files} == {"elsewhere"}
    assert files[0].stem == yaml.safe_load(files[0].read_text())["metadata"]["name"]


def test_render_of_a_bad_config_is_one_clear_line_and_exit_2(project, capsys):
    write(project / "q.jsonl", '{"question": "q"}\n')
    write(project / "models.yaml", PANEL.replace("gpus: 2", "gpus: two"))
    assert run_cli("render", "models.yaml") == 2
    err = capsys.readouterr().err
    assert "models.yaml:" in err and "gpus" in err and "Traceback" not in err


def test_render_prints_ids_and_notes_as_text_not_markup(project, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("MEDBENCH_CACHE", str(tmp_path / "empty-cache"))
    write(project / "q.jsonl", '{"question": "q"}\n')
    write(project / "models.yaml", "questions: q.jsonl\noutput: s3://medbench/runs\nmodels:\n"
          "  - {id: 'org/[/]clinical[bold]', name: '[red]clinical'}\n  - {id: 'org/[bold]note-7b'}\n")
    assert run_cli("render", "models.yaml") == 0
    err = capsys.readouterr().err
    assert "warning: org/[/]clinical[bold]: cannot size from its weights" in err
    assert "sizing: org_[bold]note-7b: 7.0B params, from the size in its id ('7b')" in err


def test_render_warns_that_a_local_output_is_invisible_to_pods(project, capsys):
    write(project / "q.jsonl", '{"question": "q"}\n')
    write(project / "models.yaml", "questions: q.jsonl\nmodels:\n  - {id: e, backend: echo}\n")
    assert run_cli("render", "models.yaml") == 0
    assert "local folder" in capsys.readouterr().err
    assert not os.path.exists(project / "results")
