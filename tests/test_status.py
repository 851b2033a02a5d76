"""`launcher status RUN`: how far each model has got, read from storage (local or S3)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from rich.console import Console

from launcher.commands.status import build_table
from launcher.runstate import format_elapsed, read_run
from runner.artefacts.records import ModelManifest
from runner.config import parse_config
from runner.engine.model_run import ModelRun
from runner.engine.recording import NullProgress
from runner.main import main as runner_main
from runner.plan import make_plan
from runner.storage import open_storage
from tests.conftest import run_cli, write
from tests.fakes.s3 import moto_endpoint_fixture, s3_fixture  # noqa: F401 - fixtures

CONFIG = """
name: panel
questions: questions.jsonl
output: {output}
system_prompt: none
models:
  - id: org/echo-a
    backend: echo
    batch_size: 2
  - id: echo-b
    backend: echo
    batch_size: 2
  - id: echo-sharded
    backend: echo
    shards: 2
"""


@pytest.fixture
def local_run(project):
    """A run where echo-a has finished and the other two have not started."""
    write(project / "questions.jsonl",
          "".join(json.dumps({"question": f"Is lesion {i} malignant?"}) + "\n" for i in range(1, 7)))
    write(project / "models.yaml", CONFIG.format(output="out"))
    assert run_cli("run", "models.yaml", "--only", "org/echo-a") == 0
    return next((project / "out").iterdir()).name


def render(table) -> str:
    console = Console(record=True, width=200)
    console.print(table)
    return console.export_text()


def rows(progress):
    return {m.model_dir: (m.state, m.done, m.total, m.errors) for m in progress.models}


def test_status_of_a_local_run(local_run, capsys):
    assert run_cli("status", local_run, "--from", "out") == 0
    out = capsys.readouterr().out
    assert "org_echo-a" in out and "complete" in out and "6/6" in out
    assert "pending" in out and "0/6" in out
    assert "6/18 answers stored across 3 model(s)" in out
    progress = read_run(open_storage("out"), local_run)
    assert rows(progress) == {
        "org_echo-a": ("complete", 6, 6, 0),
        "echo-b": ("pending", 0, 6, 0),
        "echo-sharded": ("pending", 0, 6, 0),
    }


def test_running_state_and_counts_mid_run(local_run, project):
    storage = open_storage("out")
    plan = make_plan(parse_config(CONFIG.format(output="out"), base_dir=project), run_id=local_run)
    task = plan.task("echo-b")
    seen = []

    class Peek(NullProgress):
        def advance(self, n, tokens):
            seen.append(rows(read_run(storage, local_run))["echo-b"])

    ModelRun(plan, task, storage, progress=Peek()).run()
    # The manifest is saved after each batch of two: a reader sees running 0, 2, 4 done.
    assert {s[0] for s in seen} == {"running"}
    assert sorted({s[1] for s in seen}) == [0, 2, 4]
    assert rows(read_run(storage, local_run))["echo-b"] == ("complete", 6, 6, 0)


def test_a_failed_model_shows_its_error(local_run, capsys):
    storage = open_storage("out")
    key = f"{local_run}/echo-b/manifest.json"
    storage.write_text(key, ModelManifest(
        run_id=local_run, model="echo-b", model_dir="echo-b", backend="echo", status="failed",
        error="2 of 6 questions failed; run again to retry them", total=6, done=4, errors=2,
        started_at="2026-01-01T10:00:00+00:00", finished_at="2026-01-01T10:02:05+00:00",
    ).model_dump_json())
    progress = read_run(storage, local_run)
    b = next(m for m in progress.models if m.model_dir == "echo-b")
    assert (b.state, b.done, b.errors, b.elapsed_s) == ("failed", 4, 2, 125.0)
    text = render(build_table(progress))
    assert "failed" in text and "2m05s" in text and "2 of 6 questions failed" in text


def test_shards_add_up(local_run, project):
    assert runner_main(["--output", "out", "--run-id", local_run, "--model", "echo-sharded",
                        "--shard", "1"]) == 0
    progress = read_run(open_storage("out"), local_run)
    s = next(m for m in progress.models if m.model_dir == "echo-sharded")
    assert (s.state, s.done, s.total, s.shards_started) == ("running", 3, 6, 1)
    assert "1/2 shards started" in render(build_table(progress))
    assert runner_main(["--output", "out", "--run-id", local_run, "--model", "echo-sharded",
                        "--shard", "0"]) == 0
    s = next(m for m in read_run(open_storage("out"), local_run).models if m.model_dir == "echo-sharded")
    assert (s.state, s.done, s.total, s.shards_started) == ("complete", 6, 6, 2)


def test_job_states_plug_in_as_a_column(local_run):
    progress = read_run(open_storage("out"), local_run)
    text = render(build_table(progress, job_states={"org_echo-a": "Succeeded", "echo-b": "Pending"}))
    header = next(line for line in text.splitlines() if "model" in line)
    assert header.index("model") < header.index("job") < header.index("state")
    assert "Succeeded" in text and "Pending" in text
    assert "job" not in render(build_table(progress)).splitlines()[1]


def test_status_as_json(local_run, capsys):
    assert run_cli("status", local_run, "--from", "out", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["run_id"] == local_run and data["n_questions"] == 6
    assert [(m["model_dir"], m["state"]) for m in data["models"]] == [
        ("org_echo-a", "complete"), ("echo-b", "pending"), ("echo-sharded", "pending")]


def test_status_of_a_run_in_s3(project, s3, capsys):
    write(project / "questions.jsonl", '{"question": "Is HER2 amplified?"}\n')
    write(project / "models.yaml", CONFIG.format(output=s3.url()).replace("system_prompt: none",
          f"system_prompt: none\ncluster: {{s3_endpoint: '{s3.endpoint}'}}"))
    assert run_cli("run", "models.yaml", "--only", "echo-b") == 0
    run_id = {k.split("/")[1] for k in s3.keys("runs/")}.pop()
    capsys.readouterr()
    assert run_cli("status", run_id, "--from", s3.url(), "--endpoint", s3.endpoint, "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert {m["model_dir"]: (m["state"], m["done"]) for m in data["models"]} == {
        "org_echo-a": ("pending", 0), "echo-b": ("complete", 1), "echo-sharded": ("pending", 0)}


def test_status_of_an_unknown_run_is_one_line(project, capsys):
    assert run_cli("status", "nope", "--from", "out") == 2
    assert capsys.readouterr().err.strip() == (
        "error: no run 'nope' in out (no nope/run.json there); check the run id and --from")


def test_elapsed_of_a_running_model_counts_to_now(local_run):
    storage = open_storage("out")
    storage.write_text(f"{local_run}/echo-b/manifest.json", ModelManifest(
        run_id=local_run, model="echo-b", model_dir="echo-b", backend="echo", status="running",
        total=6, done=1, started_at="2026-01-01T10:00:00+00:00").model_dump_json())
    now = datetime(2026, 1, 1, 11, 30, 0, tzinfo=UTC)
    b = next(m for m in read_run(storage, local_run, now=now).models if m.model_dir == "echo-b")
    assert (b.state, b.elapsed_s, format_elapsed(b.elapsed_s)) == ("running", 5400.0, "1h30m")


@pytest.mark.parametrize("seconds, text", [(None, "-"), (0.4, "0s"), (59, "59s"), (61, "1m01s"),
                                           (3600, "1h00m")])
def test_elapsed_reads_like_a_clock(seconds, text):
    assert format_elapsed(seconds) == text


def test_eta_of_a_running_model_is_its_pace_so_far(local_run):
    storage = open_storage("out")
    storage.write_text(f"{local_run}/echo-b/manifest.json", ModelManifest(
        run_id=local_run, model="echo-b", model_dir="echo-b", backend="echo", status="running",
        total=6, done=2, started_at="2026-01-01T10:00:00+00:00").model_dump_json())
    now = datetime(2026, 1, 1, 10, 10, 0, tzinfo=UTC)
    b = next(m for m in read_run(storage, local_run, now=now).models if m.model_dir == "echo-b")
    assert (b.elapsed_s, b.eta_s) == (600.0, 1200.0)  # 2 answers in 10 minutes, 4 to go
    assert "20m00s" in render(build_table(read_run(storage, local_run, now=now)))


def test_watch_redraws_until_every_model_has_finished(local_run, capsys, monkeypatch):
    # Each pause of the watch lets one more model run: the table follows them to the end.
    remaining = [["--model", "echo-b"], ["--model", "echo-sharded", "--shard", "0"],
                 ["--model", "echo-sharded", "--shard", "1"]]
    pauses = []

    def one_more_model(seconds):
        pauses.append(seconds)
        assert runner_main(["--output", "out", "--run-id", local_run, *remaining.pop(0)]) == 0

    monkeypatch.setattr("launcher.commands.status.time.sleep", one_more_model)
    assert run_cli("status", local_run, "--from", "out", "--watch", "--interval", "0.5") == 0
    assert pauses == [0.5, 0.5, 0.5] and remaining == []
    out = capsys.readouterr().out
    assert "18/18 answers stored across 3 model(s)" in out


def test_text_from_models_and_stored_errors_is_never_read_as_markup(project, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    write(project / "questions.jsonl", '{"question": "Is [/] a closing tag?"}\n')
    write(project / "models.yaml", """
        questions: questions.jsonl
        output: out
        models:
          - {id: "org/[bold]ward", backend: echo, name: "[bold]ward"}
          - {id: "[red]b", backend: echo}
        """)
    assert run_cli("run", "models.yaml", "--only", "[bold]ward") == 0
    run_id = next((project / "out").iterdir()).name
    open_storage("out").write_text(f"{run_id}/[red]b/manifest.json", ModelManifest(
        run_id=run_id, model="[red]b", model_dir="[red]b", backend="echo", status="failed",
        error="server said [/] and [bold]no[/bold]", total=1, done=0, errors=1).model_dump_json())
    capsys.readouterr()
    assert run_cli("status", run_id, "--from", "out") == 0
    out = capsys.readouterr().out
    assert "[bold]ward" in out and "[red]b" in out and "server said [/] and [bold]no[/bold]" in out
