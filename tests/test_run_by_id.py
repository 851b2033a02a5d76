"""A user who just submitted has the run id and nothing else in mind: every command takes it alone.

Through the CLI, with the real ``kubernetes`` client against the fake API server and real boto3
against moto's S3: ``submit``, then ``status RUN``, ``logs RUN MODEL``, ``collect RUN`` and
``cancel RUN`` with no ``--from``, ``--endpoint`` or ``-n``. The pods are played by the runner's
own entry point, as the Job would run it.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml

from launcher.k8s.render import ANN_MODEL_DIR
from runner.main import main as runner_main
from tests.conftest import run_cli, write
from tests.fakes.k8s_api import FakeKubernetes, admin_setup
from tests.fakes.s3 import moto_endpoint_fixture, s3_fixture  # noqa: F401 - fixtures

QUESTIONS = "".join(json.dumps({"question": q}) + "\n" for q in (
    "Is tamoxifen a SERM?", "What does HER2 stand for?", "Name a PARP inhibitor.",
    "What is the TNM stage of T2N1M0 breast cancer?", "Does BRCA2 raise the risk of pancreatic cancer?"))

CONFIG = """
name: ward
questions: q.jsonl
output: {output}
cluster:
  namespace: oncology
  s3_endpoint: {endpoint}
models:
  - id: echo-a
    backend: echo
  - id: echo-sharded
    backend: echo
    shards: 2
"""


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    """The fake API server, set up by an admin in namespace 'oncology'; the kubeconfig's context
    points at another namespace, so only what the launcher remembers can lead it to 'oncology'."""
    fake = FakeKubernetes().start()
    admin_setup(fake, "oncology")
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump(fake.kubeconfig(namespace="medbench")))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    monkeypatch.setenv("MEDBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MEDBENCH_OUTPUT", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def submitted(cluster, project, s3, capsys):
    write(project / "q.jsonl", QUESTIONS)
    write(project / "models.yaml", CONFIG.format(output=s3.url(), endpoint=s3.endpoint))
    assert run_cli("submit", "models.yaml") == 0
    out = capsys.readouterr().out
    run_id = re.search(r"\bward-[0-9a-f]{10}\b", out).group(0)
    jobs = {j["metadata"]["annotations"][ANN_MODEL_DIR]: n for (_ns, n), j in cluster.jobs.items()}
    return run_id, jobs, out


def play_pod(s3, run_id: str, model: str, shard: int | None = None) -> None:
    """What the model's pod does: the runner's entry point against the staged run."""
    argv = ["--output", s3.url(), "--run-id", run_id, "--model", model, "--endpoint", s3.endpoint]
    if shard is not None:
        argv += ["--shard", str(shard)]
    assert runner_main(argv) == 0


def test_every_command_after_submit_takes_the_run_id_alone(cluster, submitted, s3, project, capsys,
                                                          monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    run_id, jobs, out = submitted
    assert {ns for ns, _ in cluster.jobs} == {"oncology"}
    for line in (f"launcher status {run_id} --watch", f"launcher logs {run_id} MODEL",
                 f"launcher collect {run_id} --dest results", f"launcher cancel {run_id}"):
        assert f"  {line}\n" in out

    # status: found in S3 (not ./results), with the Jobs of namespace 'oncology' beside it.
    cluster.add_pod("oncology", jobs["echo-a"], phase="Pending", status={"conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
         "message": "0/4 nodes are available: 4 Insufficient memory."}]})
    assert run_cli("status", run_id) == 0
    out = capsys.readouterr().out
    assert s3.url() in out and "Unschedulable (0/4 nodes are available: 4 Insufficient memory.)" in out
    assert "0/5" in out and "pending" in out

    # The pods run; status follows them.
    play_pod(s3, run_id, "echo-a")
    cluster.add_pod("oncology", jobs["echo-a"], phase="Succeeded", log="echo-a: 5/5 answers stored\n")
    cluster.set_job_status("oncology", jobs["echo-a"], {"succeeded": 1, "conditions": [
        {"type": "Complete", "status": "True"}]})
    play_pod(s3, run_id, "echo-sharded", shard=0)
    assert run_cli("status", run_id, "--json") == 0
    data = json.loads(capsys.readouterr().out)
    states = {m["model_dir"]: (m["state"], m["done"]) for m in data["models"]}
    assert states == {"echo-a": ("complete", 5), "echo-sharded": ("running", 3)}
    assert data["jobs"] == {"echo-a": "complete", "echo-sharded": "pending"}

    # logs: the pod's log, from namespace 'oncology' though the context says 'medbench'.
    assert run_cli("logs", run_id, "echo-a") == 0
    assert "echo-a: 5/5 answers stored" in capsys.readouterr().out

    # collect: from S3 at its endpoint, into the local layout.
    assert run_cli("collect", run_id, "--dest", "col") == 0
    assert "Name a PARP inhibitor." in (project / "col" / run_id / "echo-a" / "3.txt").read_text()
    assert (project / "col" / run_id / "run.json").is_file()

    # cancel: the run's Jobs, in the namespace it was submitted to.
    assert run_cli("cancel", run_id) == 0
    assert "2 Job(s) deleted" in capsys.readouterr().out
    assert cluster.jobs == {}


def test_without_the_index_the_runs_jobs_say_where_it_is(cluster, submitted, s3, project, capsys,
                                                         monkeypatch, tmp_path):
    run_id, jobs, _ = submitted
    play_pod(s3, run_id, "echo-a")
    # Another machine (no index of runs), whose context points at the run's namespace.
    monkeypatch.setenv("MEDBENCH_CACHE", str(tmp_path / "another-machine"))
    (tmp_path / "kc2").write_text(yaml.safe_dump(cluster.kubeconfig(namespace="oncology")))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kc2"))
    assert run_cli("status", run_id, "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["url"] == s3.url() and data["models"][0]["done"] == 5
    assert set(data["jobs"]) == {"echo-a", "echo-sharded"}
    assert run_cli("collect", run_id, "--dest", "col") == 0
    assert (project / "col" / run_id / "echo-a" / "1.txt").is_file()


def test_from_still_overrides_and_an_unknown_run_is_one_line(cluster, submitted, s3, project, capsys):
    run_id, _, _ = submitted
    assert run_cli("status", run_id, "--from", "elsewhere") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: no run '{run_id}' in elsewhere") and err.count("\n") == 1
    assert run_cli("status", "ward-0000000000") == 2
    err = capsys.readouterr().err
    assert "no run 'ward-0000000000' in results" in err and "Traceback" not in err


def test_a_run_whose_cluster_is_gone_still_shows_its_progress(cluster, submitted, s3, capsys):
    run_id, _, _ = submitted
    play_pod(s3, run_id, "echo-a")
    cluster.stop()
    assert run_cli("status", run_id) == 0
    out = capsys.readouterr().out
    assert "5/5" in out and "Job states not shown: cannot reach the Kubernetes API server" in out
    # Asking for the Jobs outright makes the dead cluster an error.
    assert run_cli("status", run_id, "--jobs") == 1


LOCAL_CONFIG = """
name: ward
questions: q.jsonl
output: {output}
{cluster}models:
  - id: echo-a
    backend: echo
"""


@pytest.mark.parametrize("where", ["folder", "s3"])
def test_a_local_run_written_elsewhere_is_found_by_its_id_from_any_folder(where, project, s3, tmp_path,
                                                                          monkeypatch, capsys):
    """`launcher run` into /data/runs or s3://, then `status RUN` from another folder: no --from."""
    monkeypatch.setenv("MEDBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MEDBENCH_OUTPUT", raising=False)
    write(project / "q.jsonl", QUESTIONS)
    if where == "folder":
        output, cluster = "../elsewhere/runs", ""  # relative: the index must hold where it really is
    else:
        output, cluster = s3.url(), f"cluster: {{s3_endpoint: '{s3.endpoint}'}}\n"
    write(project / "models.yaml", LOCAL_CONFIG.format(output=output, cluster=cluster))
    assert run_cli("run", "models.yaml") == 0
    run_id = re.search(r"\bward-[0-9a-f]{10}\b", capsys.readouterr().out).group(0)

    other = tmp_path / "another-folder"
    other.mkdir()
    monkeypatch.chdir(other)
    assert run_cli("status", run_id) == 0
    out = capsys.readouterr().out
    assert "echo-a" in out and "5/5" in out and "complete" in out
    assert run_cli("collect", run_id, "--dest", "got") == 0
    assert (other / "got" / run_id / "echo-a" / "5.txt").exists()
