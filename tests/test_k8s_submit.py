"""`launcher submit | logs | cancel` and the Job states `status` shows, on the real `kubernetes`
client against a loopback fake API server (tests/fakes/k8s_api.py), with storage in a local
folder (as a shared filesystem would be) or moto's S3.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from launcher.k8s.client import Cluster, job_states
from launcher.k8s.render import ANN_MODEL_DIR, ANN_RUN_ID
from runner.storage import LocalStorage
from tests.conftest import run_cli, write
from tests.fakes.k8s_api import FakeKubernetes, admin_setup
from tests.fakes.s3 import FAKE_ENV, free_port, moto_endpoint_fixture, s3_fixture  # noqa: F401 - fixtures

QUESTIONS = "".join(json.dumps({"question": f"Question {i}?"}) + "\n" for i in range(1, 6))

CONFIG = """
name: ward
questions: q.jsonl
output: {output}
cluster:
  namespace: medbench
  image: reg.example/runner:{tag}
  s3_endpoint: {endpoint}
models:
  - id: google/medgemma-4b-it
    gpus: 1
  - id: gpt-4o
    backend: openai
  - id: echo-check
    backend: echo
    shards: 2
"""


@pytest.fixture
def k8s(tmp_path, monkeypatch):
    """The fake API server with the admin's set-up applied, a kubeconfig pointing at it in
    $KUBECONFIG, and the launcher's cache (the index of submitted runs) in a temporary folder."""
    fake = FakeKubernetes().start()
    admin_setup(fake, extra_pvcs=("results-nfs",))
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(fake.kubeconfig()))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setenv("MEDBENCH_CACHE", str(tmp_path / "medbench-cache"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def cfg(project):
    """A models.yaml whose output is a local folder on a (pretend) shared filesystem."""
    write(project / "q.jsonl", QUESTIONS)
    return config(project, output=str(project / "shared" / "runs"))


def config(project: Path, output: str, tag: str = "1.0", endpoint: str = "null") -> Path:
    return write(project / "models.yaml", CONFIG.format(output=output, tag=tag, endpoint=endpoint))


def submit(cfg: Path, *extra: str) -> int:
    return run_cli("submit", cfg, "--shared-output-pvc", "results-nfs", *extra)


def run_id_of(out: str, name: str = "ward") -> str:
    return re.search(rf"\b{name}-[0-9a-f]{{10}}\b", out).group(0)


def posts(fake: FakeKubernetes) -> list:
    return [r for r in fake.requests if r.method == "POST"]


# --- submit --------------------------------------------------------------------------------------


def test_submit_stages_the_run_then_creates_one_job_per_model(k8s, cfg, project, capsys):
    assert submit(cfg) == 0
    out = capsys.readouterr().out
    run_id = run_id_of(out)
    # What to type next needs the run id alone: this machine remembers where the run went.
    assert f"launcher status {run_id} --watch" in out and f"launcher logs {run_id} MODEL\n" in out
    assert f"launcher collect {run_id} --dest results" in out and f"launcher cancel {run_id}\n" in out

    store = LocalStorage(project / "shared" / "runs")
    assert store.list(run_id) == [f"{run_id}/questions.jsonl", f"{run_id}/run.json"]
    assert store.read_text(f"{run_id}/questions.jsonl").count("\n") == 5

    jobs = {j["metadata"]["annotations"][ANN_MODEL_DIR]: j for j in k8s.jobs.values()}
    assert sorted(jobs) == ["echo-check", "google_medgemma-4b-it", "gpt-4o"]
    assert all(j["metadata"]["annotations"][ANN_RUN_ID] == run_id for j in jobs.values())
    assert jobs["echo-check"]["spec"]["completionMode"] == "Indexed"
    # The shared folder is mounted where the laptop sees it, so both write the same files.
    c = jobs["gpt-4o"]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "output", "mountPath": str(project / "shared" / "runs")} in c["volumeMounts"]
    # Every new Job was first dry-run by the server, then created for real.
    dry = [r for r in posts(k8s) if r.query.get("dryRun") == ["All"]]
    assert len(dry) == 3 and len(posts(k8s)) == 6


def test_dry_run_is_a_server_side_dry_run_and_stages_nothing(k8s, cfg, project, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert submit(cfg, "--dry-run") == 0
    out = capsys.readouterr().out
    assert "nothing was staged" in out
    # ...and the plan: each Job's resources, tokens, time, GPU-hours and cost, then the total.
    assert "(estimates)" in out and "total" in out and "GPU-hours" in out and "google/medgemma-4b-it" in out
    assert k8s.jobs == {}
    assert posts(k8s) and all(r.query.get("dryRun") == ["All"] for r in posts(k8s))
    assert not (project / "shared").exists()


def test_resubmitting_the_same_run_is_idempotent(k8s, cfg, project, capsys):
    assert submit(cfg) == 0
    run_id = run_id_of(capsys.readouterr().out)
    run_json = project / "shared" / "runs" / run_id / "run.json"
    staged = run_json.read_text()
    versions = {k: j["metadata"]["resourceVersion"] for k, j in k8s.jobs.items()}
    n_posts = len(posts(k8s))

    assert submit(cfg) == 0
    out = capsys.readouterr().out
    assert "0 created, 3 already there" in out and run_id in out
    assert len(posts(k8s)) == n_posts  # nothing sent, not even a dry run
    assert {k: j["metadata"]["resourceVersion"] for k, j in k8s.jobs.items()} == versions
    assert run_json.read_text() == staged  # not staged twice


def test_a_different_job_under_the_same_name_is_a_clear_error(k8s, cfg, project, capsys):
    assert submit(cfg) == 0
    run_id = run_id_of(capsys.readouterr().out)
    # Same questions and models (so the same run id and Job names), another image: a different Job.
    config(project, output=str(project / "shared" / "runs"), tag="2.0")
    before = {k: json.dumps(j, sort_keys=True) for k, j in k8s.jobs.items()}
    assert submit(cfg) == 1
    err = capsys.readouterr().err
    assert "already exists" in err and "different spec" in err and f"launcher cancel {run_id}" in err
    assert "Traceback" not in err
    assert {k: json.dumps(j, sort_keys=True) for k, j in k8s.jobs.items()} == before


def test_an_unreachable_api_server_is_a_clear_error_and_nothing_is_staged(cfg, project, monkeypatch,
                                                                          tmp_path, capsys):
    dead = FakeKubernetes(url=f"http://127.0.0.1:{free_port()}").kubeconfig()
    (tmp_path / "dead").write_text(yaml.safe_dump(dead))
    assert submit(cfg, "--kubeconfig", tmp_path / "dead") == 1
    err = capsys.readouterr().err
    assert "cannot reach the Kubernetes API server" in err and "Connection refused" in err
    assert "Traceback" not in err
    assert not (project / "shared").exists()

    # Once the cluster answers, the same command stages the run exactly once and submits it.
    fake = FakeKubernetes().start()
    admin_setup(fake, extra_pvcs=("results-nfs",))
    try:
        (tmp_path / "live").write_text(yaml.safe_dump(fake.kubeconfig()))
        assert submit(cfg, "--kubeconfig", tmp_path / "live") == 0
        assert len(fake.jobs) == 3
    finally:
        fake.stop()
    [run_dir] = (project / "shared" / "runs").iterdir()
    assert sorted(p.name for p in run_dir.iterdir()) == ["questions.jsonl", "run.json"]


def test_a_local_output_is_refused_before_anything_happens(k8s, project, capsys):
    write(project / "q.jsonl", QUESTIONS)
    cfg = config(project, output="results")
    assert run_cli("submit", cfg) == 2
    err = capsys.readouterr().err
    assert "local folder" in err and "s3://" in err and "--shared-output-pvc" in err
    assert k8s.requests == [] and not (project / "results").exists()


def test_a_missing_namespace_says_how_to_create_it(k8s, cfg, capsys):
    assert submit(cfg, "--namespace", "nope") == 1
    err = capsys.readouterr().err
    assert "namespace 'nope' does not exist" in err and "kubectl apply -k k8s/" in err


def test_submit_to_s3_stages_the_run_in_the_bucket(k8s, project, s3, capsys):
    write(project / "q.jsonl", QUESTIONS)
    cfg = config(project, output=s3.url(), endpoint=s3.endpoint)
    assert run_cli("submit", cfg) == 0
    run_id = run_id_of(capsys.readouterr().out)
    assert s3.keys(f"runs/{run_id}/") == [f"runs/{run_id}/questions.jsonl", f"runs/{run_id}/run.json"]
    env = {e["name"]: e for j in k8s.jobs.values()
           for e in j["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["AWS_ENDPOINT_URL"]["value"] == s3.endpoint
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "medbench-s3"


# --- status, logs, cancel ------------------------------------------------------------------------


def _waiting(reason: str) -> dict:
    return {"containerStatuses": [{"name": "runner", "image": "x", "imageID": "", "ready": False,
                                   "restartCount": 0, "state": {"waiting": {"reason": reason}}}]}


@pytest.fixture
def submitted(k8s, cfg, capsys):
    assert submit(cfg) == 0
    run_id = run_id_of(capsys.readouterr().out)
    names = {j["metadata"]["annotations"][ANN_MODEL_DIR]: n for (_ns, n), j in k8s.jobs.items()}
    return run_id, names


def test_job_states_show_state_and_the_pods_reasons(k8s, submitted):
    run_id, names = submitted
    assert job_states(run_id, "medbench") == {m: "pending" for m in names}

    k8s.add_pod("medbench", names["google_medgemma-4b-it"], phase="Pending", status={
        "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                        "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]})
    k8s.add_pod("medbench", names["gpt-4o"], phase="Pending", status=_waiting("ImagePullBackOff"))
    k8s.add_pod("medbench", names["echo-check"], index=0, phase="Running")
    k8s.set_job_status("medbench", names["echo-check"], {"active": 1, "ready": 1})
    states = job_states(run_id, "medbench")
    assert states["google_medgemma-4b-it"] == \
        "pending: Unschedulable (0/3 nodes are available: 3 Insufficient nvidia.com/gpu.)"
    assert states["gpt-4o"] == "pending: ImagePullBackOff"
    assert states["echo-check"] == "running"

    k8s.add_pod("medbench", names["google_medgemma-4b-it"], phase="Failed", status={
        "containerStatuses": [{"name": "runner", "image": "x", "imageID": "", "ready": False,
                               "restartCount": 0, "state": {"terminated": {
                                   "reason": "OOMKilled", "exitCode": 137}}}]})
    k8s.set_job_status("medbench", names["google_medgemma-4b-it"], {"failed": 4, "conditions": [
        {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]})
    k8s.add_pod("medbench", names["gpt-4o"], phase="Failed", status={"reason": "Evicted"})
    k8s.set_job_status("medbench", names["echo-check"], {"succeeded": 2, "conditions": [
        {"type": "Complete", "status": "True"}]})
    states = job_states(run_id, "medbench")
    assert states["google_medgemma-4b-it"] == (
        "failed: OOMKilled (out of memory: over its 15Gi memory limit; "
        "give the model more with resources: {memory: ...})")
    assert states["gpt-4o"] == "pending: Evicted"
    assert states["echo-check"] == "complete"
    # Another run's Jobs are not this run's.
    assert job_states("ward-0000000000", "medbench") == {}


def test_status_with_jobs_shows_job_state_beside_stored_progress(k8s, submitted, project, capsys,
                                                                 monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    run_id, names = submitted
    k8s.add_pod("medbench", names["gpt-4o"], phase="Pending", status=_waiting("ImagePullBackOff"))
    runs = project / "shared" / "runs"
    assert run_cli("status", run_id, "--from", runs, "--jobs", "-n", "medbench") == 0
    out = capsys.readouterr().out
    assert "job" in out and "ImagePullBackOff" in out and "0/5" in out
    assert run_cli("status", run_id, "--from", runs, "-n", "medbench", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["jobs"]["gpt-4o"] == "pending: ImagePullBackOff"


def test_a_model_whose_job_failed_before_writing_anything_shows_failed_and_watch_ends(
        k8s, submitted, project, capsys):
    # An OOMKilled pod (or one lost with its node) writes nothing: storage still says pending.
    run_id, names = submitted
    k8s.add_pod("medbench", names["gpt-4o"], phase="Failed", status={
        "containerStatuses": [{"name": "runner", "image": "x", "imageID": "", "ready": False,
                               "restartCount": 0, "state": {"terminated": {"reason": "OOMKilled",
                                                                           "exitCode": 137}}}]})
    for name in names.values():
        k8s.set_job_status("medbench", name, {"failed": 4, "conditions": [
            {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]})
    runs = project / "shared" / "runs"
    assert run_cli("status", run_id, "--from", runs, "-n", "medbench", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    gpt = next(m for m in data["models"] if m["model_dir"] == "gpt-4o")
    assert gpt["state"] == "failed" and f"launcher logs {run_id} gpt-4o" in gpt["error"]
    assert data["jobs"]["gpt-4o"].startswith("failed: OOMKilled (out of memory: over its 1Gi memory limit")
    # --watch stops once every Job has finished, instead of waiting for ever on storage.
    done = subprocess.run([sys.executable, "-m", "launcher.cli", "status", run_id, "--from", str(runs),
                           "-n", "medbench", "--watch", "--interval", "0.1"],
                          capture_output=True, text=True, timeout=120, env=os.environ)
    assert done.returncode == 0, done.stderr
    assert "failed" in done.stdout


def test_logs_prints_each_pod_of_a_model(k8s, submitted, capsys):
    run_id, names = submitted
    k8s.add_pod("medbench", names["gpt-4o"], log="loading\n5/5 answers\n")
    assert run_cli("logs", run_id, "gpt-4o") == 0
    assert capsys.readouterr().out == "loading\n5/5 answers\n"
    assert run_cli("logs", run_id, "gpt-4o", "--tail", "1") == 0
    assert capsys.readouterr().out == "5/5 answers\n"

    for i in (0, 1):
        k8s.add_pod("medbench", names["echo-check"], index=i, log=f"shard {i} done\n")
    assert run_cli("logs", run_id, "echo-check") == 0
    out = capsys.readouterr().out
    assert out.count("==> pod ") == 2 and "shard 0 done" in out and "shard 1 done" in out
    assert run_cli("logs", run_id, "echo-check", "--shard", "1") == 0
    assert capsys.readouterr().out == "shard 1 done\n"

    assert run_cli("logs", run_id, "google/medgemma-4b-it") == 2
    err = capsys.readouterr().err
    assert "no pods for model 'google_medgemma-4b-it'" in err and "gpt-4o" in err


def test_cancel_deletes_the_runs_jobs_and_their_pods(k8s, submitted, cfg, capsys):
    run_id, names = submitted
    pod = k8s.add_pod("medbench", names["gpt-4o"])
    assert run_cli("cancel", run_id) == 0
    assert "3 Job(s) deleted" in capsys.readouterr().out
    assert k8s.jobs == {} and ("medbench", pod) not in k8s.pods
    deletes = [r for r in k8s.requests if r.method == "DELETE"]
    assert len(deletes) == 3 and all(r.query["propagationPolicy"] == ["Background"] for r in deletes)

    assert run_cli("cancel", run_id) == 2
    assert "no Jobs of run" in capsys.readouterr().err
    # After a cancel the same config submits again (and resumes from what is stored).
    assert submit(cfg) == 0 and len(k8s.jobs) == 3


def test_cluster_reads_namespace_and_context_from_the_kubeconfig(k8s, tmp_path):
    conf = k8s.kubeconfig(namespace="team-a")
    conf["contexts"].append({"name": "other", "context": {"cluster": "fake", "user": "fake",
                                                          "namespace": "team-b"}})
    path = tmp_path / "kc"
    path.write_text(yaml.safe_dump(conf))
    assert Cluster(kubeconfig=str(path)).namespace == "team-a"
    assert Cluster(kubeconfig=str(path), context="other").namespace == "team-b"
    assert Cluster("explicit", kubeconfig=str(path)).namespace == "explicit"
    assert run_cli("cancel", "r", "--kubeconfig", path, "--context", "missing") == 1


# --- the pod contract ----------------------------------------------------------------------------


def pod_environment(job: dict, index: int | None, s3, hf_home: Path) -> tuple[list[str], dict[str, str]]:
    """The container's command and environment as the kubelet would give them, with the Secrets
    the cluster would hold (here: moto's fake credentials)."""
    secrets = {("medbench-s3", "access-key-id"): FAKE_ENV["AWS_ACCESS_KEY_ID"],
               ("medbench-s3", "secret-access-key"): FAKE_ENV["AWS_SECRET_ACCESS_KEY"]}
    [c] = job["spec"]["template"]["spec"]["containers"]
    env = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "AWS_DEFAULT_REGION": FAKE_ENV["AWS_DEFAULT_REGION"], "HOME": str(hf_home.parent)}
    if os.environ.get("PYTHONPATH"):  # the image's code is this checkout's, wherever it is imported from
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    for e in c["env"]:
        if "value" in e:
            env[e["name"]] = e["value"]
        else:
            ref = e["valueFrom"]["secretKeyRef"]
            if (ref["name"], ref["key"]) in secrets:
                env[e["name"]] = secrets[(ref["name"], ref["key"])]
            else:
                assert ref.get("optional"), f"{e['name']}: a required Secret the test cluster lacks"
    env["HF_HOME"] = str(hf_home)  # the PVC's mount point, here a temporary folder
    if index is not None:
        env["JOB_COMPLETION_INDEX"] = str(index)  # set by Kubernetes for Indexed Jobs
    return c["command"], env


@pytest.mark.slow
def test_a_jobs_pod_spec_run_locally_produces_the_models_results(k8s, project, s3, capsys, tmp_path):
    write(project / "q.jsonl", QUESTIONS)
    write(project / "models.yaml", f"""
        name: contract
        questions: q.jsonl
        output: {s3.url()}
        cluster: {{s3_endpoint: "{s3.endpoint}"}}
        models:
          - {{id: echo-check, backend: echo, shards: 2}}
        """)
    assert run_cli("submit", "models.yaml") == 0
    run_id = run_id_of(capsys.readouterr().out, "contract")
    # The Job as the API server stored it: exactly what the cluster would run.
    [job] = k8s.jobs.values()
    for index in range(job["spec"]["completions"]):
        command, env = pod_environment(job, index, s3, tmp_path / "home" / "hf")
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    prefix = f"runs/{run_id}/echo-check/"
    keys = s3.keys(prefix)
    assert [f"{prefix}{i}.txt" for i in range(1, 6)] == sorted(k for k in keys if k.endswith(".txt"))
    assert "Question 3?" in s3.read(f"{prefix}3.txt").decode()
    manifest = json.loads(s3.read(f"{prefix}manifest.json"))
    assert manifest["status"] == "complete" and manifest["done"] == 5
    assert len(s3.read(f"{prefix}responses.jsonl").decode().splitlines()) == 5


@pytest.mark.slow
def test_the_runner_exits_2_on_bad_input_which_the_job_fails_at_once(k8s, project, s3, capsys, tmp_path):
    write(project / "q.jsonl", QUESTIONS)
    write(project / "models.yaml", f"""
        name: contract
        questions: q.jsonl
        output: {s3.url()}
        cluster: {{s3_endpoint: "{s3.endpoint}"}}
        models:
          - {{id: echo-check, backend: echo}}
        """)
    assert run_cli("submit", "models.yaml") == 0
    [job] = k8s.jobs.values()
    command, env = pod_environment(job, None, s3, tmp_path / "home" / "hf")
    env["MEDBENCH_RUN_ID"] = "contract-0000000000"  # a run that was never staged
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    rule = job["spec"]["podFailurePolicy"]["rules"][0]
    assert rule["action"] == "FailJob" and done.returncode in rule["onExitCodes"]["values"]
    assert "not found" in done.stderr


@pytest.mark.parametrize("text", [": [", "- a list\n", "apiVersion: v1\nkind: Config\nclusters: []\n"])
def test_a_broken_kubeconfig_is_one_clear_line(tmp_path, capsys, text):
    (tmp_path / "kc").write_text(text)
    assert run_cli("cancel", "r", "--kubeconfig", tmp_path / "kc") == 1
    err = capsys.readouterr().err
    assert f"kubeconfig {tmp_path / 'kc'}" in err and "Traceback" not in err


def test_model_names_pod_messages_and_server_errors_are_printed_as_text(k8s, project, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    write(project / "q.jsonl", QUESTIONS)
    write(project / "models.yaml", f"""
        name: ward
        questions: q.jsonl
        output: {project / "shared" / "runs"}
        models:
          - {{id: "org/[/]echo", backend: echo, name: "[bold]echo"}}
        """)
    assert submit(project / "models.yaml") == 0
    out = capsys.readouterr().out
    assert "[bold]echo" in out and "\x1b[1m" not in out
    run_id = run_id_of(out)
    [name] = [n for (_ns, n) in k8s.jobs]
    k8s.add_pod("medbench", name, phase="Pending", status={"conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
         "message": "0/3 nodes are available: 3 node(s) had untolerated taint {[/]: [bold]}."}]})
    assert run_cli("status", run_id) == 0
    out = capsys.readouterr().out
    assert "[bold]echo" in out and "untolerated taint {[/]: [bold]}" in out
    assert run_cli("logs", run_id, "[bold]missing") == 2
    assert "no pods for model '[bold]missing'" in capsys.readouterr().err
    # The API server's refusal quotes the user's name, whatever it holds.
    k8s.user, k8s.forbidden = "[/]alice[bold]", {"jobs"}
    assert run_cli("cancel", run_id) == 1
    err = capsys.readouterr().err
    assert 'User "[/]alice[bold]" cannot get resource "jobs"' in err and "Traceback" not in err
