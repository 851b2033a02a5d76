"""`launcher export`: every answer of many runs as one tidy Parquet table, rebuilt only where runs changed.

The runs are synthetic (tests/report_fixtures.py) but laid out exactly as the runner leaves
them; the table must grade every answer as `launcher report` does.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from launcher.results import runs_df, samples_df, samples_table
from launcher.results.schema import RUNS, SAMPLES, SCHEMA_VERSION, markdown
from launcher.scoring.metrics import compute_metrics
from launcher.scoring.run_data import load_run
from tests.conftest import REPO, run_cli
from tests.report_fixtures import benchmark_source, tiny_models, tiny_questions, tiny_run, write_run


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDBENCH_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def runs(tmp_path) -> Path:
    """Two finished runs of the tiny panel in one output folder."""
    root = tmp_path / "results"
    tiny_run(root, run_id="tiny-0000000001")
    write_run(root, tiny_questions(), tiny_models(), run_id="tiny-0000000002",
              questions_source=benchmark_source(tiny_questions(), n_questions=4), records=True)
    return root


def export(*paths: Path, out: Path) -> int:
    return run_cli("export", *paths, "-o", out)


def test_one_row_per_run_model_and_question_in_the_documented_schema(runs, tmp_path, capsys):
    out = tmp_path / "out" / "all.parquet"
    assert export(runs, out=out) == 0
    samples, table_runs = pq.read_table(out), pq.read_table(tmp_path / "out" / "all.runs.parquet")
    assert samples.column_names == [c.name for c in SAMPLES]
    assert table_runs.column_names == [c.name for c in RUNS]
    assert samples.schema.metadata[b"medbench.schema_version"] == str(SCHEMA_VERSION).encode()
    assert samples.num_rows == 2 * 3 * 4  # runs x models x questions
    assert table_runs.num_rows == 2 * 3
    printed = capsys.readouterr().out
    assert "2 run(s): 2 read from storage" in printed and "24 answers" in printed

    rows = samples.to_pylist()
    by = {(r["run_id"], r["model_dir"], r["question_id"]): r for r in rows}
    weak = by[("tiny-0000000001", "weak-model", "q-her2")]
    assert (weak["choice"], weak["correct"], weak["outcome"]) == (None, False, "no_answer")
    flaky = by[("tiny-0000000001", "flaky-model", "q-her2")]
    assert (flaky["correct"], flaky["outcome"]) == (None, "error")
    assert flaky["error"] == "RateLimitError: 429 after 5 attempts"
    free = by[("tiny-0000000001", "good-model", "q-free")]
    assert (free["correct"], free["outcome"], free["gold"]) == (None, "free_text", None)
    # The same question in two runs has one hash, whatever run it is in; the prompt hash too.
    a, b = by[("tiny-0000000001", "good-model", "q-bcg")], by[("tiny-0000000002", "good-model", "q-bcg")]
    assert a["question_hash"] == b["question_hash"] and a["prompt_hash"] == b["prompt_hash"]
    assert a["model_key"] == b["model_key"] != by[("tiny-0000000001", "weak-model", "q-bcg")]["model_key"]
    # Provenance: a benchmark run names it; a questions file is named by its file.
    assert b["benchmark"] == "medqa" and b["benchmark_split"] == "test"
    assert b["benchmark_revision"] == "17af9355ef89fba60de966eabaeba797c695f86e"
    assert a["benchmark"] == "file:questions.jsonl" and a["benchmark_revision"] is None


def test_every_answer_is_graded_as_the_report_grades_it(runs):
    run = runs / "tiny-0000000001"
    report = compute_metrics(load_run(run), similarity_encoder=None, bootstrap=0)
    rows = samples_table([str(run)]).to_pylist()
    for item in report["items"]:
        for model_dir, answer in item["answers"].items():
            row = next(r for r in rows if (r["model_dir"], r["question_index"]) == (model_dir, item["index"]))
            assert (row["choice"], row["answer"]) == (answer["choice"], answer["text"])
            assert row["error"] == answer["error"]
            # The report marks "no option found" apart (None); the table counts it as not correct.
            no_option = item["gold"] and answer["error"] is None and answer["choice"] is None
            assert row["correct"] == (False if no_option else answer["correct"])
    for m in report["models"]:
        graded = [r for r in rows if r["model_dir"] == m["model_dir"] and r["correct"] is not None]
        assert len(graded) == m["mc"]["n"] and sum(r["correct"] for r in graded) == m["mc"]["correct"]


def test_the_python_api_gives_pandas_and_arrow(runs):
    df = samples_df(str(runs))
    assert len(df) == 24 and set(df["run_id"]) == {"tiny-0000000001", "tiny-0000000002"}
    correct = df.groupby("model_dir")["correct"].sum().to_dict()
    assert correct == {"flaky-model": 2, "good-model": 6, "weak-model": 2}
    models = runs_df([str(runs)])
    assert models.set_index(["run_id", "model_dir"]).loc[("tiny-0000000001", "good-model"), "n_correct"] == 3


def test_a_second_export_reads_nothing_again_and_a_rerun_answer_rebuilds_only_its_run(runs, tmp_path, capsys):
    out = tmp_path / "all.parquet"
    assert export(runs, out=out) == 0
    capsys.readouterr()
    assert export(runs, out=out) == 0
    assert "0 read from storage, 2 unchanged" in capsys.readouterr().out

    # The runner answers question 2 again (a retried failure): a new record, a new responses.jsonl.
    folder = runs / "tiny-0000000002" / "flaky-model"
    record = json.loads((folder / "records" / "000002.json").read_text())
    record.update(response="Answer: B", error=None, attempts=6)
    (folder / "records" / "000002.json").unlink()
    (folder / "records" / "000002.json").write_text(json.dumps(record))
    lines = (folder / "responses.jsonl").read_text().splitlines()
    lines[1] = json.dumps(record)
    (folder / "responses.jsonl").write_text("\n".join(lines) + "\n")
    assert export(runs, out=out) == 0
    assert "1 read from storage, 1 unchanged" in capsys.readouterr().out
    row = next(r for r in pq.read_table(out).to_pylist()
               if (r["run_id"], r["model_dir"], r["question_index"]) == ("tiny-0000000002", "flaky-model", 2))
    assert (row["choice"], row["outcome"], row["attempts"]) == ("B", "correct", 6)


def test_a_run_in_progress_is_included_and_labelled_partial(runs, tmp_path, capsys):
    folder = runs / "tiny-0000000002" / "weak-model"
    (folder / "responses.jsonl").unlink()  # still running: records only
    (folder / "records" / "000003.json").unlink()
    (folder / "records" / "000004.json").unlink()
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "status": "running"}))

    assert export(runs, out=tmp_path / "all.parquet") == 0
    assert "partial (still running, or a model not started): tiny-0000000002" in capsys.readouterr().out
    table = pq.read_table(tmp_path / "all.parquet")
    rows = [r for r in table.to_pylist() if r["run_id"] == "tiny-0000000002"]
    assert {r["run_status"] for r in rows} == {"partial"}
    weak = [r for r in rows if r["model_dir"] == "weak-model"]
    assert sorted(r["question_index"] for r in weak) == [1, 2]
    assert {r["model_status"] for r in weak} == {"running"}


def test_a_record_newer_than_responses_jsonl_wins(runs, tmp_path):
    """A rerun killed before it assembled responses.jsonl: its new record is the answer."""
    folder = runs / "tiny-0000000001" / "good-model"
    shutil.copytree(runs / "tiny-0000000002" / "good-model" / "records", folder / "records")
    record = json.loads((folder / "records" / "000001.json").read_text())
    (folder / "records" / "000001.json").write_text(json.dumps({**record, "response": "Answer: C"}))
    rows = samples_table([str(runs / "tiny-0000000001")]).to_pylist()
    row = next(r for r in rows if r["model_dir"] == "good-model" and r["question_index"] == 1)
    assert (row["choice"], row["outcome"]) == ("C", "wrong")


@pytest.mark.parametrize("damage, why", [
    (lambda run: (run / "questions.jsonl").unlink(), "no questions.jsonl: the run was staged half way"),
    (lambda run: (run / "run.json").write_text('{"run_id": "tiny-'), "run.json is not valid JSON"),
    (lambda run: (run / "questions.jsonl").write_text('{"question": "cut sho'),
     "questions.jsonl:1: not valid JSON"),
])
def test_a_damaged_run_is_skipped_with_one_line_and_the_others_exported(runs, tmp_path, capsys, damage, why):
    damage(runs / "tiny-0000000001")
    assert export(runs, out=tmp_path / "all.parquet") == 0
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"warning: skipped {runs / 'tiny-0000000001'}: ")
    assert why in lines[0]
    assert set(pq.read_table(tmp_path / "all.parquet").column("run_id").to_pylist()) == {"tiny-0000000002"}


def test_a_torn_line_in_responses_is_skipped_and_its_record_read(runs, tmp_path, capsys):
    folder = runs / "tiny-0000000002" / "good-model"
    lines = (folder / "responses.jsonl").read_text().splitlines()
    lines[2] = lines[2][:40]
    (folder / "responses.jsonl").write_text("\n".join(lines) + "\n")
    assert export(runs / "tiny-0000000002", out=tmp_path / "one.parquet") == 0
    assert "good-model/responses.jsonl: 1 line(s) not JSON" in capsys.readouterr().err
    rows = pq.read_table(tmp_path / "one.parquet").to_pylist()
    assert sorted(r["question_index"] for r in rows if r["model_dir"] == "good-model") == [1, 2, 3, 4]


def test_nothing_readable_is_bad_input_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert export(tmp_path / "empty", out=tmp_path / "x.parquet") == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("no runs in it (a run folder holds run.json and questions.jsonl)")
    assert export(tmp_path / "nowhere", out=tmp_path / "x.parquet") == 2
    run = tiny_run(tmp_path / "r")
    (run / "questions.jsonl").unlink()
    (run / "run.json").write_text("{}")
    assert export(run, out=tmp_path / "x.parquet") == 2
    err = capsys.readouterr().err
    assert "error: no readable run in" in err and "Traceback" not in err
    assert not (tmp_path / "x.parquet").exists()


def test_without_pyarrow_the_error_names_the_extra(runs, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now raises ImportError
    assert export(runs, out=tmp_path / "x.parquet") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: pyarrow is not installed: the results tables need it; "
                   "pip install -e '.[results]' in the medbench checkout"]


def test_the_docs_show_the_schema_as_the_code_defines_it():
    page = (REPO / "docs" / "results.md").read_text(encoding="utf-8")
    assert markdown(SAMPLES) in page and markdown(RUNS) in page, (
        "docs/results.md is stale: paste `python -m launcher.results.schema`")
