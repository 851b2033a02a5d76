"""A run whose results live in S3 (moto on loopback, real boto3), as in the cluster.

The story: a full ``launcher run`` lands in the bucket; a pod killed with SIGKILL midway is
started again and ends with every answer exactly once; S3 answering 500 or SlowDown is ridden
out; an endpoint that dies gives one clear line and loses nothing already written.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from runner.artefacts.stored import stage_run
from runner.config import parse_config
from runner.main import main as runner_main
from runner.plan import make_plan
from runner.storage import open_storage
from tests.conftest import run_cli, write
from tests.fakes.s3 import free_port, moto_endpoint_fixture, s3_fixture  # noqa: F401 - fixtures

N_QUESTIONS = 12


def questions(n: int = N_QUESTIONS) -> str:
    return "".join(json.dumps({"id": f"q{i}", "question": f"Is finding {i} a sign of relapse?"}) + "\n"
                   for i in range(1, n + 1))


def echo_config(output: str, *, endpoint: str | None = None, batch_size: int = 2, delay: float = 0.0) -> str:
    cluster = f"cluster:\n  s3_endpoint: {endpoint}\n" if endpoint else ""
    return (
        f"name: s3test\nquestions: questions.jsonl\noutput: {output}\nsystem_prompt: none\n{cluster}"
        f"models:\n  - id: org/echo-model\n    backend: echo\n    batch_size: {batch_size}\n"
        f"    delay: {delay}\n"
    )


def stage(project, s3, n: int = N_QUESTIONS, **kw) -> str:
    """Stage a run in the bucket as `launcher submit` would; return its run id."""
    write(project / "questions.jsonl", questions(n))
    cfg = parse_config(echo_config(s3.url(), **kw), base_dir=project)
    plan = make_plan(cfg)
    stage_run(plan, open_storage(s3.url(), endpoint_url=s3.endpoint))
    return plan.run_id


def model_keys(s3, run_id: str) -> dict[str, list[str]]:
    prefix = f"runs/{run_id}/org_echo-model/"
    keys = [k[len(prefix):] for k in s3.keys(prefix)]
    return {
        "txt": [k for k in keys if k.endswith(".txt")],
        "records": [k for k in keys if k.startswith("records/")],
        "other": [k for k in keys if not k.endswith(".txt") and not k.startswith("records/")],
    }


def assert_complete(s3, run_id: str, n: int = N_QUESTIONS) -> None:
    prefix = f"runs/{run_id}/org_echo-model"
    lines = s3.read(f"{prefix}/responses.jsonl").decode().splitlines()
    ids = [json.loads(line)["id"] for line in lines]
    assert ids == [f"q{i}" for i in range(1, n + 1)]  # each answer exactly once, in order
    for i in range(1, n + 1):
        assert f"finding {i} a sign" in s3.read(f"{prefix}/{i}.txt").decode()
    manifest = json.loads(s3.read(f"{prefix}/manifest.json"))
    assert (manifest["status"], manifest["done"], manifest["total"]) == ("complete", n, n)


def test_launcher_run_writes_the_whole_run_to_s3(project, s3):
    write(project / "questions.jsonl", questions())
    write(project / "models.yaml", echo_config(s3.url(), endpoint=s3.endpoint))
    assert run_cli("run", "models.yaml") == 0
    run_ids = {k.split("/")[1] for k in s3.keys("runs/")}
    assert len(run_ids) == 1
    run_id = run_ids.pop()
    assert {f"runs/{run_id}/run.json", f"runs/{run_id}/questions.jsonl"} <= set(s3.keys())
    assert_complete(s3, run_id)
    assert not (project / "results").exists()  # nothing went to a local folder


def test_a_run_rides_out_server_errors_and_throttling(project, s3):
    write(project / "questions.jsonl", questions())
    write(project / "models.yaml", echo_config(s3.url(), endpoint=s3.endpoint))
    s3.proxy.fail(times=2, method="PUT", path_contains="/records/")
    s3.proxy.throttle(times=2, method="PUT", path_contains=".txt")
    assert run_cli("run", "models.yaml") == 0
    assert s3.proxy.injected == 4 and s3.proxy.pending_faults() == 0
    run_id = {k.split("/")[1] for k in s3.keys("runs/")}.pop()
    assert_complete(s3, run_id)


def test_a_killed_pod_resumes_and_every_answer_is_stored_once(project, s3):
    run_id = stage(project, s3, n=16, delay=0.3)
    env = {**os.environ, **s3.env(), "MEDBENCH_OUTPUT": s3.url(), "MEDBENCH_RUN_ID": run_id,
           "MEDBENCH_MODEL": "org_echo-model", "MEDBENCH_LOG_INTERVAL": "0.2"}
    pod = subprocess.Popen([sys.executable, "-m", "runner.main"], env=env, cwd=project,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120  # a guard against a hung test, not a speed check
        while time.monotonic() < deadline and pod.poll() is None:
            keys = model_keys(s3, run_id)
            if len(keys["records"]) >= 4 and "runner.log" in keys["other"]:
                break
            time.sleep(0.05)
        assert pod.poll() is None, pod.stderr.read().decode()
        pod.send_signal(signal.SIGKILL)
    finally:
        pod.kill()
        pod.wait()
        pod.stderr.close()
    killed = model_keys(s3, run_id)
    stored = len(killed["records"])
    assert 4 <= stored < 16, "the pod should have been killed midway"
    assert "responses.jsonl" not in killed["other"]
    manifest = json.loads(s3.read(f"runs/{run_id}/org_echo-model/manifest.json"))
    assert manifest["status"] == "running"  # it never got to say otherwise

    record_puts_before = s3.proxy.count("PUT", "/records/")
    code = runner_main(["--output", s3.url(), "--run-id", run_id, "--model", "org/echo-model",
                        "--endpoint", s3.endpoint])
    assert code == 0
    # Only the missing answers were produced again: nothing finished was redone or duplicated.
    assert s3.proxy.count("PUT", "/records/") - record_puts_before == 16 - stored
    assert_complete(s3, run_id, n=16)
    log = s3.read(f"runs/{run_id}/org_echo-model/runner.log").decode()
    assert "org_echo-model: 16 questions to answer" in log  # the killed attempt's lines survive
    assert f"resuming: {stored} of 16 answers already stored, {16 - stored} to go" in log
    assert "complete (16/16 answered, 0 errors)" in log


def test_an_endpoint_that_dies_midway_gives_one_line_and_loses_nothing(project, s3, monkeypatch, capsys):
    run_id = stage(project, s3, n=16)
    monkeypatch.setenv("MEDBENCH_S3_MAX_ATTEMPTS", "2")
    # The dying run cannot release its lease; the rerun waits for it to expire, so keep it short.
    monkeypatch.setenv("MEDBENCH_LEASE_SECONDS", "2")
    argv = ["--output", s3.url(), "--run-id", run_id, "--model", "org_echo-model", "--endpoint", s3.endpoint]
    s3.proxy.go_down_after(6, method="PUT", path_contains="/records/")
    assert runner_main(argv) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == [errors[0]] and errors[0].startswith(f"error: cannot reach S3 endpoint {s3.endpoint}: ")
    assert "Traceback" not in err
    written = {k: s3.read(f"runs/{run_id}/org_echo-model/{k}") for k in model_keys(s3, run_id)["records"]}
    assert len(written) == 6

    s3.proxy.down = False
    assert runner_main(argv) == 0
    for key, body in written.items():  # what was written before the outage is still there
        assert s3.read(f"runs/{run_id}/org_echo-model/{key}") == body
    assert_complete(s3, run_id, n=16)


def test_launcher_run_against_a_dead_endpoint_is_one_clear_line(project, s3, monkeypatch, capsys):
    monkeypatch.setenv("MEDBENCH_S3_MAX_ATTEMPTS", "1")
    dead = f"http://127.0.0.1:{free_port()}"
    write(project / "questions.jsonl", questions(2))
    write(project / "models.yaml", echo_config(s3.url(), endpoint=dead))
    assert run_cli("run", "models.yaml") == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: cannot reach S3 endpoint {dead}: ")
    assert "\n" not in err


# --- the runner's contract with the pod, on a local folder (cheap) -------------------------


@pytest.fixture
def local_run(project):
    write(project / "questions.jsonl", questions(6))
    text = echo_config("out").replace("    delay: 0.0\n", "    delay: 0.0\n    shards: 2\n")
    write(project / "models.yaml", text)
    plan = make_plan(parse_config(text, base_dir=project))
    stage_run(plan, open_storage("out"))
    return plan.run_id


def test_shards_from_the_indexed_job_env_assemble_one_model(local_run, project, monkeypatch):
    monkeypatch.setenv("MEDBENCH_OUTPUT", "out")
    monkeypatch.setenv("MEDBENCH_RUN_ID", local_run)
    monkeypatch.setenv("MEDBENCH_MODEL", "org_echo-model")
    monkeypatch.setenv("MEDBENCH_SHARDS", "2")
    for index in ("1", "0"):
        monkeypatch.setenv("JOB_COMPLETION_INDEX", index)
        assert runner_main([]) == 0
    folder = project / "out" / local_run / "org_echo-model"
    ids = [json.loads(line)["id"] for line in (folder / "responses.jsonl").read_text().splitlines()]
    assert ids == [f"q{i}" for i in range(1, 7)]
    merged = json.loads((folder / "manifest.json").read_text())
    assert (merged["status"], merged["done"], merged["total"]) == ("complete", 6, 6)
    assert "shard 1/2" in (folder / "shards" / "0.log").read_text()
    assert "shard 2/2" in (folder / "shards" / "1.log").read_text()


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--run-id", "nope"], "error: out/nope/run.json not found: no run 'nope' is staged there"),
        (["--model", "gpt-9"], "error: no model named 'gpt-9' in this config; known: org_echo-model"),
        (["--shards", "3"],
         "error: MEDBENCH_SHARDS=3, but model 'org_echo-model' is configured with shards: 2"),
        (["--shard", "2"], "error: shard 2 is out of range: model 'org_echo-model' has 2 shard(s)"),
        (["--shard", "x"], "error: shard (JOB_COMPLETION_INDEX)='x': expected a whole number"),
        (["--run-id", "../etc"], "error: run id must not contain '..'"),
        (["--output", ""], "error: output is not set: pass --output or set MEDBENCH_OUTPUT"),
    ],
)
def test_bad_pod_input_exits_2_with_one_line(local_run, project, capsys, argv, expected):
    base = {"--output": "out", "--run-id": local_run, "--model": "org_echo-model"}
    args = dict(base)
    flags = iter(argv)
    for flag in flags:
        args[flag] = next(flags)
    code = runner_main([x for kv in args.items() for x in kv])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith(expected) and "\n" not in err
    assert sorted(p.name for p in (project / "out" / local_run).iterdir()) == ["questions.jsonl", "run.json"]
