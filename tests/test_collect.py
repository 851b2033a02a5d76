"""`launcher collect`: a run in S3 comes down into the local layout, once.

The user runs in the cluster, collects, and then uses the original tool's compare snippet
on the result; collecting again fetches only what changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os

import pytest

from launcher.commands.collect import collect_run
from runner.main import main as runner_main
from runner.storage import open_storage
from runner.storage.s3 import S3Storage
from tests.conftest import run_cli, write
from tests.fakes.s3 import moto_endpoint_fixture, s3_fixture  # noqa: F401 - fixtures

MiB = 1024 * 1024


def multipart_etag(data: bytes, part_size: int) -> str:
    """S3's tag for ``data`` uploaded in ``part_size`` parts: MD5 of the parts' MD5s, ``-<parts>``.

    Written here from the definition, apart from runner.storage.etag, which reads files."""
    parts = [data[i:i + part_size] for i in range(0, len(data), part_size)] or [b""]
    digests = b"".join(hashlib.md5(p).digest() for p in parts)
    return f"{hashlib.md5(digests).hexdigest()}-{len(parts)}"


def compare_responses(question_num):
    """The original tool's README snippet ("Model Comparison"), verbatim in its logic."""
    folders = [f for f in os.listdir() if os.path.isdir(f) and f != "__pycache__"]
    for folder in folders:
        file_path = os.path.join(folder, f"{question_num}.txt")
        if os.path.exists(file_path):
            with open(file_path, 'r', encoding='utf-8') as f:  # noqa: UP015 - as in the original
                print(f"\n{folder}:")
                print(f.read())


CONFIG = """
name: panel
questions: questions.jsonl
output: {output}
system_prompt: none
{extra}
models:
  - id: org/echo-a
    backend: echo
    batch_size: 3
  - id: echo-b
    backend: echo
    generation: {{max_new_tokens: 4}}
"""


def questions(n: int) -> str:
    return "".join(json.dumps({"question": f"What does marker {i} predict?"}) + "\n" for i in range(1, n + 1))


@pytest.fixture
def s3_run(project, s3):
    """A finished two-model run in the bucket; returns its run id."""
    write(project / "questions.jsonl", questions(5))
    write(project / "models.yaml", CONFIG.format(
        output=s3.url(), extra=f"cluster: {{s3_endpoint: '{s3.endpoint}'}}"))
    assert run_cli("run", "models.yaml") == 0
    return {k.split("/")[1] for k in s3.keys("runs/")}.pop()


def collect(s3, run_id: str, dest: str = "col") -> int:
    return run_cli("collect", run_id, "--from", s3.url(), "--endpoint", s3.endpoint, "--dest", dest)


def object_gets(s3) -> int:
    """GETs of result files: not listings (?list-type), not run.json (read to check the run)."""
    return sum(1 for m, p, _h in s3.proxy.requests
               if m == "GET" and "list-type" not in p and not p.endswith("/run.json"))


def test_collected_run_works_with_the_original_compare_snippet(project, s3, s3_run, monkeypatch):
    assert collect(s3, s3_run) == 0
    run_dir = project / "col" / s3_run
    assert (run_dir / "run.json").is_file() and (run_dir / "questions.jsonl").is_file()
    for model in ("org_echo-a", "echo-b"):
        assert sorted(p.name for p in (run_dir / model).glob("*.txt")) == [f"{i}.txt" for i in range(1, 6)]
        assert len((run_dir / model / "responses.jsonl").read_text().splitlines()) == 5
        assert json.loads((run_dir / model / "manifest.json").read_text())["status"] == "complete"

    monkeypatch.chdir(run_dir)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        compare_responses(1)
    printed = out.getvalue()
    assert "\norg_echo-a:\nWhat does marker 1 predict?" in printed
    assert "\necho-b:\nWhat does marker 1\n" in printed  # four words: its max_new_tokens is 4


def test_collect_is_idempotent_and_fetches_only_what_changed(project, s3, s3_run):
    source = open_storage(s3.url(), endpoint_url=s3.endpoint)
    first = collect_run(source, s3_run, project / "col")
    assert len(first.downloaded) == len(s3.keys(f"runs/{s3_run}/")) and not first.skipped
    local_txt = project / "col" / s3_run / "echo-b" / "3.txt"
    before = {p: p.stat().st_mtime_ns for p in (project / "col").rglob("*") if p.is_file()}
    (project / "col" / s3_run / "notes.md").write_text("my notes")  # local-only: left alone

    gets = object_gets(s3)
    again = collect_run(source, s3_run, project / "col")
    assert again.downloaded == [] and len(again.skipped) == len(first.downloaded)
    assert object_gets(s3) == gets  # decided from the listing alone: nothing fetched
    assert {p: p.stat().st_mtime_ns for p in before} == before

    # Same size, different bytes: only the ETag tells them apart.
    old = local_txt.read_text()
    new = old.swapcase()
    assert len(new) == len(old) and new != old
    s3.client.put_object(Bucket=s3.bucket, Key=f"runs/{s3_run}/echo-b/3.txt", Body=new.encode())
    third = collect_run(source, s3_run, project / "col")
    assert third.downloaded == [f"{s3_run}/echo-b/3.txt"]
    assert local_txt.read_text() == new
    assert (project / "col" / s3_run / "notes.md").read_text() == "my notes"


def test_a_locally_edited_file_is_restored(project, s3, s3_run):
    assert collect(s3, s3_run) == 0
    answer = project / "col" / s3_run / "org_echo-a" / "2.txt"
    original = answer.read_text()
    answer.write_text("X" * len(original))
    source = open_storage(s3.url(), endpoint_url=s3.endpoint)
    assert collect_run(source, s3_run, project / "col").downloaded == [f"{s3_run}/org_echo-a/2.txt"]
    assert answer.read_text() == original


def test_multipart_files_are_recognised_as_unchanged(project, s3, s3_run, tmp_path):
    uploader = S3Storage(s3.url(), endpoint_url=s3.endpoint,
                         multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    blob = tmp_path / "embeddings.npy"
    blob.write_bytes(bytes(range(256)) * (6 * MiB // 256))
    uploader.upload_file(f"{s3_run}/echo-b/embeddings.npy", blob)
    assert uploader.size_and_etag(f"{s3_run}/echo-b/embeddings.npy")[1] == multipart_etag(
        blob.read_bytes(), 5 * MiB)
    source = open_storage(s3.url(), endpoint_url=s3.endpoint)
    assert f"{s3_run}/echo-b/embeddings.npy" in collect_run(source, s3_run, project / "col").downloaded
    assert collect_run(source, s3_run, project / "col").downloaded == []


def test_collect_rides_out_throttling(project, s3, s3_run):
    s3.proxy.throttle(times=2, method="GET")
    assert collect(s3, s3_run) == 0
    assert s3.proxy.injected == 2
    assert len(list((project / "col" / s3_run).rglob("*.txt"))) == 10


def test_collect_prints_what_it_did(project, s3, s3_run, capsys):
    assert collect(s3, s3_run) == 0
    out = capsys.readouterr().out
    assert f"{s3_run}: " in out and "0 unchanged" in out
    assert collect(s3, s3_run) == 0
    assert "0 file(s) downloaded (0 B)" in capsys.readouterr().out


# --- a run with shards, collected from a local folder ----------------------------------------


SHARDED = """
name: sharded
questions: questions.jsonl
output: out
system_prompt: none
models:
  - id: echo-s
    backend: echo
    shards: 2
  - id: echo-late
    backend: echo
"""


def test_missing_responses_are_assembled_from_the_records(project):
    write(project / "questions.jsonl", questions(4))
    write(project / "models.yaml", SHARDED)
    assert run_cli("run", "models.yaml", "--only", "echo-late") == 0
    run_id = next((project / "out").iterdir()).name
    for shard in ("0", "1"):
        argv = ["--output", "out", "--run-id", run_id, "--model", "echo-s", "--shard", shard]
        assert runner_main(argv) == 0
    # A pod killed right after its last answer: every record stored, no responses.jsonl.
    (project / "out" / run_id / "echo-s" / "responses.jsonl").unlink()
    # Another model still on its way: half its records.
    for i in (3, 4):
        (project / "out" / run_id / "echo-late" / "records" / f"{i:06d}.json").unlink()
    (project / "out" / run_id / "echo-late" / "responses.jsonl").unlink()

    result = collect_run(open_storage("out"), run_id, project / "col")
    assert result.assembled == ["echo-s"] and result.incomplete == ["echo-late"]
    lines = (project / "col" / run_id / "echo-s" / "responses.jsonl").read_text().splitlines()
    assert [json.loads(line)["index"] for line in lines] == [1, 2, 3, 4]
    assert not (project / "col" / run_id / "echo-late" / "responses.jsonl").exists()
    assert not (project / "out" / run_id / "echo-s" / "responses.jsonl").exists()  # source untouched


def test_collecting_an_unknown_run_is_one_line(project, capsys):
    (project / "results").mkdir()
    assert run_cli("collect", "no-such-run") == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: no run 'no-such-run' in results (no no-such-run/run.json there); "
                   "check the run id and --from")


@pytest.mark.parametrize("run_id", ["../x", "a/b", "/abs"])
def test_collect_refuses_unsafe_run_ids(project, capsys, run_id):
    assert run_cli("collect", run_id) == 2
    assert capsys.readouterr().err.startswith("error: run id must not")
