"""Results get the permissions the user's umask gives any file, not a private 0600.

A lab shares one results folder through a group (umask 002): every file a run writes, and
every file ``collect`` brings down, must be readable (and with 002 writable) by the group,
exactly as if the user had created it with any other tool.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from tests.conftest import run_cli, write
from tests.fakes.s3 import moto_endpoint_fixture, s3_fixture  # noqa: F401 - fixtures

CONFIG = """
name: shared
questions: questions.jsonl
output: {output}
system_prompt: none
{cluster}
models:
  - id: echo-a
    backend: echo
  - id: echo-b
    backend: echo
"""


@pytest.fixture(params=[0o022, 0o002, 0o077])
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def modes(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): stat.S_IMODE(p.stat().st_mode)
            for p in folder.rglob("*") if p.is_file()}


def questions() -> str:
    return "".join(json.dumps({"question": f"Is marker {i} prognostic?"}) + "\n" for i in range(1, 4))


def test_a_local_run_writes_files_with_the_umask(project, umask):
    write(project / "questions.jsonl", questions())
    write(project / "models.yaml", CONFIG.format(output="out", cluster=""))
    assert run_cli("run", "models.yaml") == 0
    found = modes(project / "out")
    assert {"echo-a/1.txt", "echo-a/responses.jsonl", "echo-a/manifest.json"} <= {
        k.split("/", 1)[1] for k in found}
    assert set(found.values()) == {0o666 & ~umask}, found


def test_collected_files_get_the_umask(project, s3, umask):
    write(project / "questions.jsonl", questions())
    write(project / "models.yaml", CONFIG.format(
        output=s3.url(), cluster=f"cluster: {{s3_endpoint: '{s3.endpoint}'}}"))
    assert run_cli("run", "models.yaml") == 0
    (run_id,) = {k.split("/")[1] for k in s3.keys("runs/")}
    assert run_cli("collect", run_id, "--from", s3.url(), "--endpoint", s3.endpoint, "--dest", "col") == 0
    found = modes(project / "col")
    assert len(found) >= 10
    assert set(found.values()) == {0o666 & ~umask}, found


def test_the_report_and_its_cache_get_the_umask(project, umask):
    """metrics.json went through mkstemp, which makes every file 0600 whatever the umask."""
    lines = [{"question": f"Is marker {i} prognostic?", "reference": f"Marker {i} is prognostic."}
             for i in range(1, 4)]
    write(project / "questions.jsonl", "".join(json.dumps(line) + "\n" for line in lines))
    write(project / "models.yaml", CONFIG.format(output="out", cluster=""))
    assert run_cli("run", "models.yaml") == 0
    (run,) = (project / "out").iterdir()

    assert run_cli("report", run, "--encoder", "none", "--bootstrap", "0") == 0
    found = modes(run)
    assert {"metrics.json", "metrics.csv", "report.html"} <= found.keys()
    assert any(name.startswith(".cache/") for name in found)  # ROUGE-L scores kept for the next report
    assert set(found.values()) == {0o666 & ~umask}, found


def test_the_launchers_own_cache_gets_the_umask(tmp_path, umask):
    """The index of submitted runs and the Hub metadata for sizing go through the one atomic write."""
    from launcher.cache import read_json, write_json

    write_json(tmp_path / "runs.json", {"runs": []})
    assert read_json(tmp_path / "runs.json") == {"runs": []}
    assert modes(tmp_path) == {"runs.json": 0o666 & ~umask}
