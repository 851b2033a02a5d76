"""The last two shards of a model finish together, and the merged files still say it all.

responses.jsonl and the merged manifest are derived from every shard's records and manifests,
written by whichever shard finishes (and by ``collect``). When two shards finish at the same
moment, one can read before the other's last writes land and write after the other's
complete files. The races are replayed here step by step: a storage wrapper stops a chosen
write at a gate until the test opens it, so each interleaving happens every time.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from launcher.commands.collect import collect_run
from runner.artefacts.stored import stage_run
from runner.config import parse_config
from runner.engine.model_run import ModelRun
from runner.main import main as runner_main
from runner.plan import Plan, make_plan
from runner.storage import LocalStorage, Storage, open_storage
from tests.conftest import run_cli, write
from tests.fakes.s3 import moto_endpoint_fixture, s3_fixture  # noqa: F401 - fixtures

MODEL = "echo-s"
N = 6

CONFIG = f"""
name: sharded
questions: questions.jsonl
output: {{output}}
system_prompt: none
{{cluster}}
models:
  - id: {MODEL}
    backend: echo
    batch_size: 1
    shards: 2
"""


def questions(n: int = N) -> str:
    return "".join(json.dumps({"id": f"q{i}", "question": f"Is node {i} involved?"}) + "\n"
                   for i in range(1, n + 1))


class Gate:
    """Stops the first write it matches until ``open()``; ``reached`` says one is waiting."""

    def __init__(self, matches: Callable[[str, bytes], bool]):
        self.matches = matches
        self.armed = True
        self.reached = threading.Event()
        self._open = threading.Event()

    def open(self) -> None:
        self._open.set()

    def pass_through(self) -> None:
        self.armed = False
        self.reached.set()
        assert self._open.wait(60), "the test never opened the gate"


class Gated(Storage):
    """A local folder whose writes can be held at gates: the test decides who writes when."""

    def __init__(self, inner: LocalStorage):
        self.inner, self.url = inner, inner.url
        self.gates: list[Gate] = []
        self._lock = threading.Lock()

    def hold(self, matches: Callable[[str, bytes], bool]) -> Gate:
        gate = Gate(matches)
        self.gates.append(gate)
        return gate

    def write_bytes(self, key: str, data: bytes) -> None:
        with self._lock:
            gate = next((g for g in self.gates if g.armed and g.matches(key, data)), None)
            if gate is not None:
                gate.armed = False
        if gate is not None:
            gate.pass_through()
        self.inner.write_bytes(key, data)

    def read_bytes(self, key: str) -> bytes:
        return self.inner.read_bytes(key)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def list(self, prefix: str = "") -> list[str]:
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        self.inner.delete(key)


def by(shard: int) -> bool:
    return threading.current_thread().name == f"shard-{shard}"


@pytest.fixture
def staged(project) -> tuple[Plan, Gated]:
    write(project / "questions.jsonl", questions())
    cfg = parse_config(CONFIG.format(output="out", cluster=""), base_dir=project)
    plan = make_plan(cfg, run_id="sharded-1")
    storage = Gated(LocalStorage(project / "out"))
    stage_run(plan, storage)
    return plan, storage


def shard_thread(plan: Plan, storage: Storage, shard: int) -> threading.Thread:
    def run() -> None:
        ModelRun(plan, plan.task(MODEL), storage, shard=shard, shards=2).run()

    thread = threading.Thread(target=run, name=f"shard-{shard}", daemon=True)
    thread.start()
    return thread


def merged(project: Path) -> tuple[list[int], dict]:
    folder = project / "out" / "sharded-1" / MODEL
    lines = (folder / "responses.jsonl").read_text().splitlines()
    return [json.loads(line)["index"] for line in lines], json.loads((folder / "manifest.json").read_text())


def test_a_shard_that_read_the_records_early_and_writes_last_still_writes_them_all(staged, project):
    plan, storage = staged
    responses = f"sharded-1/{MODEL}/responses.jsonl"
    # Shard 0 has read the records (its own three) and is about to write responses.jsonl...
    late = storage.hold(lambda key, data: key == responses and by(0))
    first = shard_thread(plan, storage, 0)
    assert late.reached.wait(60)
    # ...when shard 1 runs from start to end, writing the complete files.
    shard_thread(plan, storage, 1).join(60)
    indices, manifest = merged(project)
    assert indices == list(range(1, N + 1))
    late.open()  # shard 0 now writes what it read: half the answers
    first.join(60)
    indices, manifest = merged(project)
    assert indices == list(range(1, N + 1))
    assert (manifest["status"], manifest["done"], manifest["total"]) == ("complete", N, N)


def test_a_merged_manifest_made_before_the_other_shard_said_complete_is_made_again(staged, project):
    plan, storage = staged
    manifest_key = f"sharded-1/{MODEL}/manifest.json"
    # Shard 1 has stored all its answers but not yet said "complete" in its own manifest...
    saying_done = storage.hold(lambda key, data: key.endswith("shards/1.json") and b'"complete"' in data)
    second = shard_thread(plan, storage, 1)
    assert saying_done.reached.wait(60)
    # ...while shard 0 finishes, merges (shard 1 still "running") and is about to write that.
    stale = storage.hold(lambda key, data: key == manifest_key and by(0))
    first = shard_thread(plan, storage, 0)
    assert stale.reached.wait(60)
    saying_done.open()
    second.join(60)
    assert merged(project)[1]["status"] == "complete"
    stale.open()  # shard 0 writes the merged manifest it made with shard 1 still running
    first.join(60)
    indices, manifest = merged(project)
    assert indices == list(range(1, N + 1))
    assert (manifest["status"], manifest["done"], manifest["total"]) == ("complete", N, N)


# --- collect re-derives merged files that disagree with the records ------------------------


@pytest.fixture(params=["local", "s3"])
def finished(request, project) -> tuple[str, str | None]:
    """A finished two-shard run, by its pods; returns (output, endpoint)."""
    write(project / "questions.jsonl", questions())
    if request.param == "local":
        output, endpoint, cluster = "out", None, ""
    else:
        s3 = request.getfixturevalue("s3")
        output, endpoint = s3.url(), s3.endpoint
        cluster = f"cluster: {{s3_endpoint: '{endpoint}'}}"
    cfg = parse_config(CONFIG.format(output=output, cluster=cluster), base_dir=project)
    stage_run(make_plan(cfg, run_id="sharded-1"), open_storage(output, endpoint_url=endpoint))
    for shard in ("0", "1"):
        argv = ["--output", output, "--run-id", "sharded-1", "--model", MODEL, "--shard", shard]
        assert runner_main(argv + (["--endpoint", endpoint] if endpoint else [])) == 0
    return output, endpoint


@pytest.mark.parametrize("stale", ["responses", "manifest", "both"])
def test_collect_rebuilds_merged_files_that_disagree_with_the_records(project, finished, stale, capsys):
    output, endpoint = finished
    source = open_storage(output, endpoint_url=endpoint)
    key = f"sharded-1/{MODEL}"
    whole = source.read_text(f"{key}/responses.jsonl")
    manifest = json.loads(source.read_text(f"{key}/manifest.json"))
    if stale in ("responses", "both"):  # only shard 0's answers: 1, 3, 5
        source.write_text(f"{key}/responses.jsonl", "".join(whole.splitlines(keepends=True)[::2]))
    if stale in ("manifest", "both"):  # written while shard 1 was still going
        source.write_text(f"{key}/manifest.json",
                          json.dumps({**manifest, "status": "running", "done": 3}, indent=2))
    before = {k: source.read_bytes(k) for k in source.list("sharded-1")}

    argv = ["collect", "sharded-1", "--from", output, "--dest", "col"]
    assert run_cli(*argv, *(["--endpoint", endpoint] if endpoint else [])) == 0
    assert f"{MODEL}: assembled responses.jsonl from its records" in capsys.readouterr().out
    local = project / "col" / "sharded-1" / MODEL
    assert (local / "responses.jsonl").read_text() == whole
    got = json.loads((local / "manifest.json").read_text())
    assert (got["status"], got["done"], got["total"]) == ("complete", N, N)
    assert {k: source.read_bytes(k) for k in source.list("sharded-1")} == before  # storage untouched

    # Collected again: storage still holds the stale copy, so it comes down and is rebuilt again.
    result = collect_run(source, "sharded-1", project / "col")
    assert result.assembled == [MODEL]  # the stale copy in storage came down again, and was rebuilt again
    assert (local / "responses.jsonl").read_text() == whole
