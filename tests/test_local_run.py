"""`launcher run` end to end on the free echo backend: the layout, and resume after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import run_cli, write


def questions(n: int) -> str:
    return "".join(json.dumps({"question": f"Question number {i}?"}) + "\n" for i in range(1, n + 1))


def echo_config(delay: float = 0.0, batch: int = 4) -> str:
    return f"""
name: echo-run
questions: questions.jsonl
system_prompt: general-physician
output: out
models:
  - id: medbench/echo
    backend: echo
    batch_size: {batch}
    delay: {delay}
"""


def the_run(project: Path) -> Path:
    (run,) = [p for p in (project / "out").iterdir() if p.is_dir()]
    return run


def test_run_leaves_the_design_layout(project, capsys):
    write(project / "questions.jsonl", questions(5))
    write(project / "models.yaml", echo_config())
    assert run_cli("run", "models.yaml") == 0
    run = the_run(project)
    info = json.loads((run / "run.json").read_text())
    assert info["run_id"] == run.name and info["n_questions"] == 5
    assert "general-physician" not in json.dumps(info["system_prompts"])  # resolved text, not name
    assert (run / "questions.jsonl").read_text().count("\n") == 5
    model = run / "medbench_echo"
    records = [json.loads(line) for line in (model / "responses.jsonl").read_text().splitlines()]
    assert [r["index"] for r in records] == [1, 2, 3, 4, 5]
    for r in records:
        assert (model / f"{r['index']}.txt").read_text() == r["response"]
        assert r["prompt"].startswith("You are an experienced physician")
        assert {"finish_reason", "input_tokens", "output_tokens", "latency_s", "attempts"} <= set(r)
    manifest = json.loads((model / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["done"] == 5
    assert manifest["system_prompt_hash"] and manifest["versions"]["python"]
    assert "summary" in capsys.readouterr().out


def test_second_run_of_a_finished_run_does_nothing_new(project):
    write(project / "questions.jsonl", questions(3))
    write(project / "models.yaml", echo_config())
    assert run_cli("run", "models.yaml") == 0
    model = the_run(project) / "medbench_echo"
    before = {p.name: p.stat().st_mtime_ns for p in (model / "records").iterdir()}
    assert run_cli("run", "models.yaml") == 0
    after = {p.name: p.stat().st_mtime_ns for p in (model / "records").iterdir()}
    assert before == after


def test_killed_run_resumes_with_every_answer_exactly_once(project):
    n = 24
    write(project / "questions.jsonl", questions(n))
    write(project / "models.yaml", echo_config(delay=0.4, batch=2))
    proc = subprocess.Popen([sys.executable, "-m", "launcher.cli", "run", "models.yaml"], cwd=project,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    records: list[Path] = []
    while time.monotonic() < deadline:
        found = list((project / "out").glob("*/medbench_echo/records/*.json"))
        if len(found) >= 6:
            records = found
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert records, "the run never got going"
    model = the_run(project) / "medbench_echo"
    first = {p.name: p.read_text() for p in (model / "records").iterdir()}
    assert 6 <= len(first) < n, "the kill must land midway"
    assert not (model / "responses.jsonl").exists()
    assert json.loads((model / "manifest.json").read_text())["status"] == "running"

    assert run_cli("run", "models.yaml") == 0

    lines = (model / "responses.jsonl").read_text().splitlines()
    indices = [json.loads(line)["index"] for line in lines]
    assert indices == list(range(1, n + 1))
    assert sorted(p.name for p in model.glob("*.txt")) == sorted(f"{i}.txt" for i in range(1, n + 1))
    for name, text in first.items():  # finished answers were kept, not redone
        assert (model / "records" / name).read_text() == text
    assert json.loads((model / "manifest.json").read_text())["status"] == "complete"


def test_only_runs_the_named_model(project):
    write(project / "questions.jsonl", questions(2))
    write(project / "models.yaml", echo_config() + "  - id: other/echo\n    backend: echo\n")
    assert run_cli("run", "models.yaml", "--only", "other/echo") == 0
    assert [p.name for p in the_run(project).iterdir() if p.is_dir()] == ["other_echo"]


def test_a_record_is_stored_byte_for_byte_as_it_always_was(project):
    """Other tools and older reports read responses.jsonl: its keys, their order and their
    spelling stay put, whichever class declares them."""
    write(project / "questions.jsonl", json.dumps({"question": "Is it?"}) + "\n")
    write(project / "models.yaml", """
        name: pin
        questions: questions.jsonl
        system_prompt: Be brief.
        generation:
          max_new_tokens: 3
        output: out
        models:
          - id: medbench/echo
            backend: echo
        """)
    assert run_cli("run", "models.yaml") == 0
    model = the_run(project) / "medbench_echo"
    line = ('{"schema_version":1,"id":"1","index":1,"prompt":"Be brief.\\n\\nIs it?\\nAnswer:",'
            '"response":"Be brief. Is","finish_reason":"length","input_tokens":5,"output_tokens":3,'
            '"latency_s":0.0,"attempts":1}')
    assert (model / "records" / "000001.json").read_text() == line
    assert (model / "responses.jsonl").read_text() == line + "\n"


def test_every_field_of_a_record_keeps_its_place_in_the_json():
    from runner.artefacts.records import ResponseRecord

    rec = ResponseRecord(
        id="q", index=1, prompt=[{"role": "user", "content": "Hi"}], response="A", finish_reason="stop",
        input_tokens=3, output_tokens=1, reasoning_tokens=0, latency_s=0.5, error="e", attempts=2,
        cost_usd=0.001, option_loglikelihoods=[-1.0, -2.0], prediction="A", prediction_norm="B",
        dimension=4, truncated=False, surrogates_replaced=1)
    assert rec.model_dump_json() == (
        '{"schema_version":1,"id":"q","index":1,"prompt":[{"role":"user","content":"Hi"}],"response":"A",'
        '"finish_reason":"stop","input_tokens":3,"output_tokens":1,"reasoning_tokens":0,"latency_s":0.5,'
        '"error":"e","attempts":2,"cost_usd":0.001,"option_loglikelihoods":[-1.0,-2.0],"prediction":"A",'
        '"prediction_norm":"B","dimension":4,"truncated":false,"surrogates_replaced":1}')
