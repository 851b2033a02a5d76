"""`launcher export` and `launcher compare` on runs in S3 (moto on loopback, through real boto3).

The same runs give the same rows from a bucket as from a folder; a prefix of hundreds of runs is
listed once (a thousand keys a page), and what has not changed is not fetched again.
"""

from __future__ import annotations

import contextlib
import io
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import run_cli
from tests.fakes.s3 import moto_endpoint_fixture, s3_fixture  # noqa: F401 - fixtures
from tests.report_fixtures import FakeModel, benchmark_source, tiny_models, tiny_questions, write_run


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDBENCH_CACHE", str(tmp_path / "cache"))


def upload(s3, root: Path, prefix: str = "runs") -> int:
    """Every file under ``root`` (a folder of runs) into the bucket under ``prefix``, straight to moto."""
    files = [p for p in root.rglob("*") if p.is_file()]

    def put(p: Path) -> None:
        key = f"{prefix}/{p.relative_to(root).as_posix()}"
        s3.client.put_object(Bucket=s3.bucket, Key=key, Body=p.read_bytes())

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, files))
    return len(files)


def cli(s3, *argv) -> int:
    """The launcher, talking to the fake through its fault proxy (which counts the requests)."""
    return run_cli(*argv, "--endpoint", s3.endpoint)


def rows(path: Path) -> list[dict]:
    return sorted(({k: v for k, v in r.items() if k != "source"} for r in pq.read_table(path).to_pylist()),
                  key=lambda r: (r["run_id"], r["model_dir"], r["question_index"]))


@pytest.fixture
def local_runs(tmp_path) -> Path:
    root = tmp_path / "results"
    write_run(root, tiny_questions(), tiny_models(), run_id="tiny-0000000001", records=True)
    write_run(root, tiny_questions(), tiny_models(), run_id="tiny-0000000002", records=True,
              questions_source=benchmark_source(tiny_questions(), n_questions=4))
    return root


def test_a_bucket_prefix_gives_the_rows_a_folder_gives(s3, local_runs, tmp_path):
    upload(s3, local_runs)
    assert run_cli("export", local_runs, "-o", tmp_path / "local.parquet") == 0
    assert cli(s3, "export", s3.url("runs"), "-o", tmp_path / "s3.parquet") == 0
    assert rows(tmp_path / "s3.parquet") == rows(tmp_path / "local.parquet")
    sources = set(pq.read_table(tmp_path / "s3.parquet").column("source").to_pylist())
    assert sources == {f"{s3.url('runs')}/tiny-0000000001", f"{s3.url('runs')}/tiny-0000000002"}
    # One run by its own prefix, too.
    assert cli(s3, "export", s3.url("runs/tiny-0000000002"), "-o", tmp_path / "one.parquet") == 0
    assert {r["run_id"] for r in rows(tmp_path / "one.parquet")} == {"tiny-0000000002"}


def test_a_prefix_of_many_runs_is_listed_once_and_unchanged_runs_are_not_fetched(s3, tmp_path, capsys):
    model = FakeModel("m", "org/m", answer=lambda q: "Answer: A")
    run = write_run(tmp_path / "one", tiny_questions()[:1], [model], run_id="run-0000", records=True)
    files = {p.relative_to(run).as_posix(): p.read_text() for p in run.rglob("*") if p.is_file()}
    assert len(files) == 6  # run.json, questions.jsonl, and the model's manifest, responses, record, 1.txt

    def put(i: int) -> None:
        for key, text in files.items():
            s3.client.put_object(Bucket=s3.bucket, Key=f"runs/run-{i:04d}/{key}",
                                 Body=text.replace("run-0000", f"run-{i:04d}").encode())

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, range(170)))  # 1,020 keys: more than one page of a listing

    assert cli(s3, "export", s3.url("runs"), "-o", tmp_path / "all.parquet") == 0
    requests = s3.proxy.requests
    lists = [p for m, p, _ in requests if m == "GET" and "list-type=2" in p]
    gets = [p for m, p, _ in requests if m == "GET" and "list-type=2" not in p]
    assert len(lists) == 2  # two pages of one listing, not a listing per run
    assert len(gets) == 170 * 4 and not any("/records/" in p for p in gets)  # finished runs: no record files
    assert not [m for m, _, _ in requests if m == "HEAD"]
    assert "170 run(s): 170 read from storage" in capsys.readouterr().out

    s3.proxy.requests.clear()
    assert cli(s3, "export", s3.url("runs"), "-o", tmp_path / "all.parquet") == 0
    assert [m for m, p, _ in s3.proxy.requests] == ["GET", "GET"]  # the listing's two pages, nothing else
    assert "0 read from storage, 170 unchanged" in capsys.readouterr().out


def test_a_partial_and_a_damaged_run_in_a_bucket(s3, local_runs, tmp_path, capsys):
    # tiny-0000000002's weak-model still running: records only, two of them.
    folder = local_runs / "tiny-0000000002" / "weak-model"
    (folder / "responses.jsonl").unlink()
    (folder / "records" / "000004.json").unlink()
    (folder / "records" / "000003.json").unlink()
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "status": "running"}))
    # A third run staged half way: run.json written, questions.jsonl never.
    half = write_run(local_runs, tiny_questions(), tiny_models(), run_id="tiny-0000000003")
    (half / "questions.jsonl").unlink()
    upload(s3, local_runs)

    assert cli(s3, "export", s3.url("runs"), "-o", tmp_path / "all.parquet") == 0
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [
        f"warning: skipped {s3.url('runs')}/tiny-0000000003: no questions.jsonl: the run was staged half "
        "way, or is not a run"]
    assert "partial (still running, or a model not started): tiny-0000000002" in captured.out
    weak = [r for r in rows(tmp_path / "all.parquet")
            if (r["run_id"], r["model_dir"]) == ("tiny-0000000002", "weak-model")]
    assert [r["question_index"] for r in weak] == [1, 2] and {r["run_status"] for r in weak} == {"partial"}


def test_compare_two_runs_in_a_bucket(s3, local_runs, tmp_path):
    # This month weak-model got q-aspirin right.
    folder = local_runs / "tiny-0000000002" / "weak-model"
    lines = [json.loads(line) for line in (folder / "responses.jsonl").read_text().splitlines()]
    lines[0]["response"] = "Answer: A"
    (folder / "responses.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    upload(s3, local_runs)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli(s3, "compare", s3.url("runs"), "--match", "question", "--json") == 0
    result = json.loads(out.getvalue())
    flips = {f["model_dir"]: f for f in result["flips"]}
    assert flips["weak-model"]["flipped"] == 1 and flips["good-model"]["flipped"] == 0
    [item] = flips["weak-model"]["items"]
    assert item["question_id"] == "q-aspirin"
    assert (item["a"]["outcome"], item["b"]["outcome"]) == ("wrong", "correct")
