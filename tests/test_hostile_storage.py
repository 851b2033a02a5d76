"""A store that misbehaves, through the CLI: no answer is lost, no damaged file is kept, no
credential is shown, no manifest says `running` after its process ended.

The story: a run lives in S3 (moto on loopback, behind tests/fakes/s3.py's proxy). Someone's
tool drops stray objects into it; the network cuts a download in half or flips a byte; an object
has a name no local disk can hold; the user runs with -v to see what happens, with a session
token in the environment; and a config carries the store's login in its endpoint URL.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

from runner.artefacts.stored import stage_run
from runner.config import parse_config
from runner.main import main as runner_main
from runner.plan import make_plan
from runner.storage import open_storage
from runner.storage.s3 import S3Storage
from tests.conftest import REPO, run_cli, write
from tests.fakes.s3 import moto_endpoint_fixture, s3_fixture  # noqa: F401 - fixtures

N = 8
MODEL = "org_echo-model"
MiB = 1024 * 1024


def questions(n: int = N) -> str:
    return "".join(json.dumps({"id": f"q{i}", "question": f"Is finding {i} a sign of relapse?"}) + "\n"
                   for i in range(1, n + 1))


def config(output: str, endpoint: str) -> str:
    return (f"name: hostile\nquestions: questions.jsonl\noutput: {output}\nsystem_prompt: none\n"
            f"cluster:\n  s3_endpoint: {endpoint}\n"
            "models:\n  - id: org/echo-model\n    backend: echo\n    batch_size: 2\n")


@pytest.fixture
def s3_run(project, s3):
    """A finished run of one echo model in the bucket: its run id."""
    write(project / "questions.jsonl", questions())
    write(project / "models.yaml", config(s3.url(), s3.endpoint))
    assert run_cli("run", "models.yaml") == 0
    return {k.split("/")[1] for k in s3.keys("runs/")}.pop()


def collect(s3, run_id: str) -> int:
    return run_cli("collect", run_id, "--from", s3.url(), "--endpoint", s3.endpoint, "--dest", "col")


def warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("warning:")]


def stored(s3, run_id: str, name: str) -> bytes:
    return s3.read(f"runs/{run_id}/{MODEL}/{name}")


def put(s3, key: str, body: bytes = b"stray") -> None:
    s3.client.put_object(Bucket=s3.bucket, Key=key, Body=body)


# --- 9: a listing conflict never loses good data -------------------------------------------------


def test_stray_objects_beside_the_layout_never_cost_a_record(project, s3, s3_run, capsys):
    # Another tool wrote below a record as if it were a folder, and a file where the records
    # folder is. A disk holds either a file or a folder by one name: the layout's own keys win.
    model = f"runs/{s3_run}/{MODEL}"
    put(s3, f"{model}/records/000005.json/x")
    put(s3, f"{model}/records")
    capsys.readouterr()

    assert collect(s3, s3_run) == 0

    err = capsys.readouterr().err
    local = project / "col" / s3_run / MODEL
    assert (local / "records" / "000005.json").read_bytes() == stored(s3, s3_run, "records/000005.json")
    assert (local / "responses.jsonl").read_bytes() == stored(s3, s3_run, "responses.jsonl")
    assert len((local / "responses.jsonl").read_text().splitlines()) == N
    assert json.loads((local / "manifest.json").read_text())["done"] == N
    lines = warnings(err)
    assert len(lines) == 2, err
    assert sum("records/000005.json/x" in line for line in lines) == 1
    assert sum(line.endswith(f"{MODEL}/records': a file where the run has a folder") for line in lines) == 1


def test_collect_never_rebuilds_responses_from_fewer_records_than_it_holds(project, s3, s3_run, capsys):
    # Record 5 vanished from the store (a lifecycle rule, a hand clean-up): responses.jsonl holds
    # the last copy of that answer. Rebuilding it from the 7 records left would drop it.
    s3.client.delete_object(Bucket=s3.bucket, Key=f"runs/{s3_run}/{MODEL}/records/000005.json")
    capsys.readouterr()

    assert collect(s3, s3_run) == 0

    out, err = capsys.readouterr()
    local = project / "col" / s3_run / MODEL / "responses.jsonl"
    assert local.read_bytes() == stored(s3, s3_run, "responses.jsonl")
    assert [json.loads(line)["index"] for line in local.read_text().splitlines()] == list(range(1, N + 1))
    assert "assembled responses.jsonl" not in out
    assert any(f"{MODEL}: responses.jsonl kept as stored" in line and "question(s) 5" in line
               for line in warnings(err)), err


# --- 10: a cut GET is retried; no process leaves `running` behind --------------------------------


def test_a_record_read_cut_mid_body_while_finishing_is_retried(project, s3, capsys):
    write(project / "questions.jsonl", questions())
    write(project / "models.yaml", config(s3.url(), s3.endpoint))
    # The only records read during a fresh run are those the end of the run assembles from.
    s3.proxy.cut_body(times=2, path_contains="/records/")

    assert run_cli("run", "models.yaml") == 0, capsys.readouterr().err

    assert s3.proxy.injected == 2
    run_id = {k.split("/")[1] for k in s3.keys("runs/")}.pop()
    manifest = json.loads(stored(s3, run_id, "manifest.json"))
    assert (manifest["status"], manifest["done"]) == ("complete", N)
    assert len(stored(s3, run_id, "responses.jsonl").decode().splitlines()) == N


def stage(project, s3) -> str:
    """The run as `launcher submit` stages it, for a pod to run: its run id."""
    write(project / "questions.jsonl", questions())
    plan = make_plan(parse_config(config(s3.url(), s3.endpoint), base_dir=project))
    stage_run(plan, open_storage(s3.url(), endpoint_url=s3.endpoint))
    return plan.run_id


def pod(s3, run_id: str) -> int:
    return runner_main(["--output", s3.url(), "--run-id", run_id, "--model", MODEL,
                        "--endpoint", s3.endpoint])


def test_a_pod_that_fails_while_finishing_marks_its_manifest_failed(project, s3, monkeypatch, capsys):
    run_id = stage(project, s3)
    monkeypatch.setenv("MEDBENCH_S3_MAX_ATTEMPTS", "2")
    s3.proxy.cut_body(times=1000, path_contains="/records/")  # every answer stored, none readable

    assert pod(s3, run_id) == 1

    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "/records/" in errors[0], err
    manifest = json.loads(stored(s3, run_id, "manifest.json"))
    assert manifest["status"] == "failed"
    assert "/records/" in manifest["error"] and manifest["finished_at"]


def test_a_local_run_that_fails_while_finishing_marks_its_manifest_failed(project, s3, monkeypatch, capsys):
    """`launcher run` runs the same ModelRun as a pod: the same promise holds without runner/main."""
    write(project / "questions.jsonl", questions())
    write(project / "models.yaml", config(s3.url(), s3.endpoint))
    monkeypatch.setenv("MEDBENCH_S3_MAX_ATTEMPTS", "2")
    s3.proxy.cut_body(times=1000, path_contains="/records/")  # every answer stored, none readable

    assert run_cli("run", "models.yaml") == 1

    assert "Traceback" not in capsys.readouterr().err
    run_id = {k.split("/")[1] for k in s3.keys("runs/")}.pop()
    manifest = json.loads(stored(s3, run_id, "manifest.json"))
    assert manifest["status"] == "failed"
    assert "/records/" in manifest["error"] and manifest["finished_at"]


def test_a_pod_that_cannot_mark_its_manifest_says_so(project, s3, monkeypatch, capsys):
    run_id = stage(project, s3)
    monkeypatch.setenv("MEDBENCH_S3_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("MEDBENCH_LEASE_SECONDS", "2")
    # The manifest that says `running` goes up; then the store is gone for good.
    s3.proxy.go_down_after(1, method="PUT", path_contains="/manifest.json")

    assert pod(s3, run_id) == 1

    err = capsys.readouterr().err
    assert json.loads(stored(s3, run_id, "manifest.json"))["status"] == "running"
    assert any(f"{MODEL}/manifest.json still says 'running'" in line for line in warnings(err)), err
    assert "Traceback" not in err


# --- 11: what the listing says is what lands ---------------------------------------------------


def test_a_download_that_differs_from_the_listing_is_fetched_again(project, s3, s3_run):
    s3.proxy.corrupt_body(times=1, path_contains="/3.txt")

    assert collect(s3, s3_run) == 0

    assert s3.proxy.injected == 1
    assert (project / "col" / s3_run / MODEL / "3.txt").read_bytes() == stored(s3, s3_run, "3.txt")


def test_a_download_that_never_matches_fails_and_writes_nothing_in_its_place(project, s3, s3_run, capsys):
    s3.proxy.corrupt_body(times=1000, path_contains="/responses.jsonl")
    capsys.readouterr()

    assert collect(s3, s3_run) == 1

    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"{MODEL}/responses.jsonl" in errors[0] and "MD5" in errors[0], err
    assert "Traceback" not in err
    local = project / "col" / s3_run / MODEL
    assert not (local / "responses.jsonl").exists()
    assert not [p for p in (project / "col").rglob("*") if p.name.endswith(".tmp")]


def test_a_multipart_upload_with_unusual_parts_is_verified_too(project, s3, s3_run, tmp_path):
    # Another tool uploaded in 6 MiB parts (6 + 6 + 1): the ETag is "<md5 of part md5s>-3".
    blob = tmp_path / "embeddings.npy"
    blob.write_bytes(hashlib.sha256(b"seed").digest() * (13 * MiB // 32))
    uploader = S3Storage(s3.url(), endpoint_url=s3.direct_endpoint,
                         multipart_threshold=5 * MiB, multipart_chunksize=6 * MiB)
    uploader.upload_file(f"{s3_run}/{MODEL}/embeddings.npy", blob)
    assert stored(s3, s3_run, "embeddings.npy") == blob.read_bytes()
    s3.proxy.corrupt_body(times=1, path_contains="/embeddings.npy")

    assert collect(s3, s3_run) == 0

    assert s3.proxy.injected == 1
    assert (project / "col" / s3_run / MODEL / "embeddings.npy").read_bytes() == blob.read_bytes()


# --- 12: a name no disk can hold ------------------------------------------------------------------


def test_a_key_too_long_for_the_disk_is_left_out_with_one_warning(project, s3, s3_run, capsys):
    model = f"runs/{s3_run}/{MODEL}"
    put(s3, f"{model}/notes/{'n' * 300}.txt")
    long_but_fine = f"{'f' * 250}.txt"  # fits the disk; its temporary name beside it must too
    put(s3, f"{model}/notes/{long_but_fine}", b"kept")
    capsys.readouterr()

    assert collect(s3, s3_run) == 0

    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = warnings(err)
    assert f"{'n' * 300}.txt" in line and "255 bytes" in line
    local = project / "col" / s3_run / MODEL
    assert (local / "notes" / long_but_fine).read_bytes() == b"kept"
    assert len(list(local.glob("*.txt"))) == N


# --- 13: -v shows what botocore does, never a credential --------------------------------------------


SESSION_TOKEN = "FwoGZXIvYXdzEXAMPLE-session-token-0123456789abcdef"
SECRET_KEY = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"


def test_verbose_output_carries_no_credential(project, s3):
    write(project / "questions.jsonl", questions(2))
    write(project / "models.yaml", config(s3.url(), s3.endpoint))
    env = {**os.environ, **s3.env(), "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_SESSION_TOKEN": SESSION_TOKEN,
           "PYTHONPATH": str(REPO)}
    launcher = [sys.executable, "-m", "launcher.cli", "-v"]
    ran = subprocess.run([*launcher, "run", "models.yaml"], env=env, cwd=project,
                         capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr[-3000:]
    run_id = {k.split("/")[1] for k in s3.keys("runs/")}.pop()
    got = subprocess.run([*launcher, "collect", run_id, "--from", s3.url(), "--endpoint", s3.endpoint,
                          "--dest", "col"], env=env, cwd=project, capture_output=True, text=True, timeout=120)
    assert got.returncode == 0, got.stderr[-3000:]

    for shown in (ran, got):
        text = shown.stdout + shown.stderr
        assert "botocore" in text and "x-amz-security-token" in text.lower()  # debug output is there
        assert SESSION_TOKEN not in text and SECRET_KEY not in text
        assert "Signature=" not in text and "AWS4-HMAC-SHA256 Credential=" not in text


# --- 14: a login in the S3 endpoint belongs in the Secret ------------------------------------------


PASSWORD = "minio-Pa55word-0987"


@pytest.mark.parametrize("command", [["render", "models.yaml", "-o", "manifests"], ["run", "models.yaml"]])
def test_an_s3_endpoint_with_a_login_is_refused(project, capsys, command):
    write(project / "questions.jsonl", questions(2))
    write(project / "models.yaml", config("s3://medbench/runs", f"http://medbench:{PASSWORD}@minio.minio:9000"))

    assert run_cli(*command) == 2

    out, err = capsys.readouterr()
    assert PASSWORD not in out + err
    assert err.startswith("error: models.yaml") and err.count("\n") == 1
    assert "cluster: s3_endpoint must not hold credentials" in err and "S3 Secret" in err
    assert sorted(p.name for p in project.iterdir()) == ["models.yaml", "questions.jsonl"]


def test_an_endpoint_flag_with_a_login_is_refused(project, capsys):
    assert run_cli("collect", "some-run", "--from", "s3://medbench/runs",
                   "--endpoint", f"http://medbench:{PASSWORD}@127.0.0.1:9") == 2
    err = capsys.readouterr().err
    assert PASSWORD not in err and err.count("\n") == 1 and "AWS_ACCESS_KEY_ID" in err

