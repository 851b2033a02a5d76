"""One process at a time runs a model of a run: the second is refused, waits, or takes over
a lease its crashed owner left behind.

The story: a researcher starts ``launcher run --run-id ward-1`` twice by mistake (two
terminals, a cron job and a hand run): the second stops at once naming the first, having
written nothing, or with ``--wait`` waits and then finds every answer done, none paid twice.
A run killed with SIGKILL leaves its lease, and the next run proceeds. In the cluster, a Job's
retry that finds the old pod's lease waits for it (or for it to expire) instead of failing;
the shards of one model run side by side. Everything runs on a local folder and on S3 (moto).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from runner.artefacts.stored import stage_run
from runner.config import parse_config
from runner.errors import LeaseHeld, StorageNotFound
from runner.plan import make_plan
from runner.storage import LocalStorage, Storage, open_storage
from runner.storage.lease import LeaseRecord, Leases, Owner
from tests.conftest import run_cli, write
from tests.fakes.s3 import moto_endpoint_fixture, s3_fixture  # noqa: F401 - fixtures

RUN_ID = "ward-1"
MODEL = "medbench_echo"
N = 8


def questions(n: int = N) -> str:
    return "".join(json.dumps({"id": f"q{i}", "question": f"Is lesion {i} malignant?"}) + "\n"
                   for i in range(1, n + 1))


class Where:
    """Where the run lives, and how a test and a subprocess reach it."""

    def __init__(self, output: str, endpoint: str | None = None, env: dict[str, str] | None = None):
        self.output, self.endpoint, self.env = output, endpoint, env or {}

    def storage(self) -> Storage:
        return open_storage(self.output, endpoint_url=self.endpoint)

    def config(self, *, delay: float = 0.2, shards: int = 1) -> str:
        cluster = f"cluster: {{s3_endpoint: '{self.endpoint}'}}\n" if self.endpoint else ""
        return (f"name: ward\nquestions: questions.jsonl\noutput: {self.output}\nsystem_prompt: none\n"
                f"{cluster}models:\n  - id: medbench/echo\n    backend: echo\n    batch_size: 1\n"
                f"    delay: {delay}\n    shards: {shards}\n")

    def snapshot(self, prefix: str = RUN_ID) -> dict[str, bytes]:
        storage = self.storage()
        out = {}
        for key in storage.list(prefix):
            try:
                out[key] = storage.read_bytes(key)
            except StorageNotFound:
                continue
        return out

    def records(self) -> list[str]:
        return self.storage().list(f"{RUN_ID}/{MODEL}/records/")

    def leases(self) -> list[str]:
        return self.storage().list(f"{RUN_ID}/leases/")


@pytest.fixture(params=["local", "s3"])
def where(request, project) -> Where:
    if request.param == "local":
        return Where(str(project / "out"))
    fake = request.getfixturevalue("s3")
    return Where(fake.url(), fake.endpoint, fake.env())


@pytest.fixture
def local(project) -> Where:
    return Where(str(project / "out"))


@pytest.fixture
def panel(project, where) -> Where:
    """A run on a local folder and on S3."""
    write(project / "questions.jsonl", questions())
    write(project / "models.yaml", where.config())
    return where


@pytest.fixture
def local_panel(project, local) -> Where:
    """A run on a local folder only: the lease logic is the same code on S3."""
    write(project / "questions.jsonl", questions())
    write(project / "models.yaml", local.config())
    return local


def wait_for(check: Callable[[], bool], what: str, proc: subprocess.Popen | None = None) -> None:
    """Poll ``check`` until true: a guard against a hung test, not a speed check."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process ended (exit {proc.returncode}) before {what}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def start(project: Path, where: Where, argv: list[str], name: str, **env: str) -> subprocess.Popen:
    out = open(project / f"{name}.out", "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen([sys.executable, "-m", *argv], cwd=project, stdout=out, stderr=subprocess.STDOUT,
                            env={**os.environ, **where.env, **env})


def output_of(project: Path, name: str) -> str:
    return (project / f"{name}.out").read_text()


def launcher_run(project: Path, where: Where, *extra: str, name: str = "first",
                 **env: str) -> subprocess.Popen:
    argv = ["launcher.cli", "run", "models.yaml", "--run-id", RUN_ID, *extra]
    return start(project, where, argv, name, **env)


def me(pid: int, command: str = "launcher run") -> str:
    owner = Owner.this_process(command)
    return f"{command} ({owner.user}@{owner.host}, pid {pid})"


def assert_every_answer_once(where: Where, n: int = N) -> None:
    storage = where.storage()
    lines = storage.read_text(f"{RUN_ID}/{MODEL}/responses.jsonl").splitlines()
    assert [json.loads(line)["id"] for line in lines] == [f"q{i}" for i in range(1, n + 1)]
    manifest = json.loads(storage.read_text(f"{RUN_ID}/{MODEL}/manifest.json"))
    assert (manifest["status"], manifest["done"]) == ("complete", n)
    assert where.leases() == []  # released at the end


# --- two launcher runs of one run id --------------------------------------------------------


def test_a_second_run_is_refused_naming_the_first_and_writes_nothing(panel, project, capsys):
    first = launcher_run(project, panel)
    try:
        wait_for(lambda: len(panel.records()) >= 2, "the first run's answers", first)
        os.kill(first.pid, signal.SIGSTOP)  # hold it still, so anything written now is the second's
        before = panel.snapshot()
        assert run_cli("run", "models.yaml", "--run-id", RUN_ID) == 1
        err = capsys.readouterr().err.strip()
        assert err == (f"error: run {RUN_ID}: model {MODEL} is being run by {me(first.pid)} right now; "
                       "wait for it with --wait, or give this run another --run-id")
        assert panel.snapshot() == before
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert first.wait() == 0, output_of(project, "first")
    assert_every_answer_once(panel)


def test_with_wait_the_second_run_waits_then_finds_everything_done(panel, project):
    short = {"MEDBENCH_LEASE_SECONDS": "2"}  # looks at the lease every half second
    # A second per answer: the first run must still be going when the second has started,
    # which on a loaded machine takes seconds (at 0.2 s an answer the first could finish first).
    write(project / "models.yaml", panel.config(delay=1.0))
    first = launcher_run(project, panel, **short)
    wait_for(lambda: len(panel.records()) >= 2, "the first run's answers", first)
    second = launcher_run(project, panel, "--wait", name="second", **short)
    wait_for(lambda: "waiting:" in output_of(project, "second"), "the second run to wait", second)
    assert first.wait() == 0, output_of(project, "first")
    answered = {k: v for k, v in panel.snapshot().items() if "/records/" in k}
    assert second.wait() == 0, output_of(project, "second")
    said = output_of(project, "second")
    assert f"waiting: run {RUN_ID}: model {MODEL} is being run by {me(first.pid)}" in said
    assert f"{N}/{N}" in said
    assert {k: v for k, v in panel.snapshot().items() if "/records/" in k} == answered  # none redone
    assert_every_answer_once(panel)


def test_a_run_killed_with_sigkill_leaves_a_lease_the_next_run_takes_over(local_panel, project):
    first = launcher_run(project, local_panel)
    wait_for(lambda: len(local_panel.records()) >= 2, "the first run's answers", first)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert local_panel.leases() == [f"{RUN_ID}/leases/{MODEL}.0.json"]  # nobody released it
    # Its owner was a process of this machine that is gone: no need to wait for the expiry.
    assert run_cli("run", "models.yaml", "--run-id", RUN_ID) == 0
    assert_every_answer_once(local_panel)


def test_a_lease_from_another_machine_expires_by_itself(local_panel, project, monkeypatch, caplog):
    """A pod on a node that was lost: no process to look at, so the lease runs out."""
    monkeypatch.setenv("MEDBENCH_LEASE_SECONDS", "1")
    lost = Owner(command="runner", host="gpu-node-7", pid=1, user="medbench", pod="ward-echo-0-x7k2p",
                 machine="gpu-node-7|pid:[4026531836]")
    now = time.time()
    # Its clock ran ahead of ours: by our clock it expires in a minute. Seen unchanged for
    # longer than its life (1 s), it is stale all the same.
    record = LeaseRecord(token="crashed", owner=lost, ttl_s=1.0, acquired_at=now - 30, renewed_at=now,
                         expires_at=now + 60, what=f"run {RUN_ID}: model {MODEL}")
    local_panel.storage().write_bytes(f"{RUN_ID}/leases/{MODEL}.0.json", record.dumps())
    assert run_cli("run", "models.yaml", "--run-id", RUN_ID) == 1  # one look: it seems fresh
    assert run_cli("run", "models.yaml", "--run-id", RUN_ID, "--wait") == 0
    assert ("taking over the lease of runner (pod ward-echo-0-x7k2p): it was not renewed for 1 s"
            in caplog.text)
    assert_every_answer_once(local_panel)


def test_an_expired_lease_is_taken_over_at_once(local_panel, project, caplog):
    lost = Owner(command="runner", host="gpu-node-7", pid=1, user="medbench", pod="ward-echo-0-x7k2p",
                 machine="gpu-node-7|pid:[4026531836]")
    then = time.time() - 120
    record = LeaseRecord(token="crashed", owner=lost, ttl_s=60, acquired_at=then, renewed_at=then,
                         expires_at=then + 60, what=f"run {RUN_ID}: model {MODEL}")
    local_panel.storage().write_bytes(f"{RUN_ID}/leases/{MODEL}.0.json", record.dumps())
    assert run_cli("run", "models.yaml", "--run-id", RUN_ID) == 0
    assert "taking over the lease of runner (pod ward-echo-0-x7k2p): it expired" in caplog.text
    assert_every_answer_once(local_panel)


def test_a_run_whose_lease_is_taken_over_stops_writing(local_panel, project):
    write(project / "questions.jsonl", questions(40))  # long enough to be caught midway
    first = launcher_run(project, local_panel, MEDBENCH_LEASE_SECONDS="1")
    wait_for(lambda: len(local_panel.records()) >= 2, "the first run's answers", first)
    # Another process took the lease (the first could not renew it in time, say its network
    # was cut): the first must notice at its next renewal and stop answering.
    now = time.time()
    other = Owner(command="runner", host="gpu-node-2", pid=7, user="medbench", pod="ward-echo-0-new",
                  machine="gpu-node-2|")
    record = LeaseRecord(token="new-holder", owner=other, ttl_s=60, acquired_at=now, renewed_at=now,
                         expires_at=now + 60, what=f"run {RUN_ID}: model {MODEL}")
    local_panel.storage().write_bytes(f"{RUN_ID}/leases/{MODEL}.0.json", record.dumps())
    assert first.wait() == 1
    said = output_of(project, "first")
    assert "runner (pod ward-echo-0-new) took over this model's lease" in said
    assert "Traceback" not in said
    assert len(local_panel.records()) < 40
    lease = json.loads(local_panel.storage().read_bytes(f"{RUN_ID}/leases/{MODEL}.0.json"))
    assert lease["token"] == "new-holder"  # the new holder's lease is left alone


# --- pods ------------------------------------------------------------------------------------


def stage(project: Path, where: Where, shards: int = 1) -> None:
    write(project / "questions.jsonl", questions())
    cfg = parse_config(where.config(shards=shards), base_dir=project)
    stage_run(make_plan(cfg, run_id=RUN_ID), where.storage())


def pod(project: Path, where: Where, shard: int = 0, shards: int = 1, name: str = "pod") -> subprocess.Popen:
    env = {"MEDBENCH_OUTPUT": where.output, "MEDBENCH_RUN_ID": RUN_ID, "MEDBENCH_MODEL": MODEL,
           "JOB_COMPLETION_INDEX": str(shard), "MEDBENCH_SHARDS": str(shards), "MEDBENCH_LEASE_SECONDS": "2",
           "MEDBENCH_LOG_INTERVAL": "0.2"}
    return start(project, where, ["runner.main"], name, **env)


def test_a_pod_waits_for_the_lease_another_pod_holds(project, where):
    stage(project, where)
    # The old pod of this Job, still finishing on its node (the test holds its lease for it).
    old = Owner(command="runner", host="gpu-node-3", pid=1, user="medbench", pod="ward-echo-0-old",
                machine="gpu-node-3|")
    holder = Leases(where.storage(), {f"{RUN_ID}/leases/{MODEL}.0.json": f"run {RUN_ID}: model {MODEL}"},
                    command="runner", ttl=1.0, owner=old)
    holder.acquire()
    try:
        retry = pod(project, where)
        wait_for(lambda: "is being run by runner (pod ward-echo-0-old)" in output_of(project, "pod"),
                 "the retry to wait", retry)
        assert where.records() == []  # it waits before answering anything
    finally:
        holder.release()
    assert retry.wait() == 0, output_of(project, "pod")
    assert "waiting until it finishes or its lease expires" in output_of(project, "pod")
    assert_every_answer_once(where)


def test_two_shards_of_one_model_run_at_once(project, where):
    stage(project, where, shards=2)
    pods = [pod(project, where, shard, 2, name=f"pod{shard}") for shard in (0, 1)]
    for shard, p in enumerate(pods):
        assert p.wait() == 0, output_of(project, f"pod{shard}")
        assert "waiting" not in output_of(project, f"pod{shard}")
    assert_every_answer_once(where)


def test_a_local_run_of_a_sharded_model_waits_for_no_shard_it_does_not_hold(project, local, capsys):
    """``launcher run`` runs a sharded model whole, so it needs every shard's lease."""
    write(project / "questions.jsonl", questions())
    write(project / "models.yaml", local.config(shards=2))
    pod_owner = Owner(command="runner", host="gpu-node-1", pid=1, user="medbench", pod="ward-echo-1-abcde",
                      machine="gpu-node-1|")
    with Leases(local.storage(), {f"{RUN_ID}/leases/{MODEL}.1.json": "shard 2"}, command="runner",
                owner=pod_owner) as held:
        held.acquire()
        assert run_cli("run", "models.yaml", "--run-id", RUN_ID) == 1
    err = capsys.readouterr().err
    assert f"run {RUN_ID}: model {MODEL} shard 2/2 is being run by runner (pod ward-echo-1-abcde)" in err
    assert local.leases() == [] and local.records() == []


# --- the lease itself ------------------------------------------------------------------------


def test_conditional_writes_hold_on_both_stores(where):
    storage = where.storage()
    key = f"{RUN_ID}/leases/x.0.json"
    first = storage.create_new(key, b"one")
    assert first is not None
    assert storage.create_new(key, b"two") is None  # already there
    data, version = storage.read_versioned(key)
    assert (data, version) == (b"one", first)
    second = storage.replace_versioned(key, b"three", version)
    assert second is not None and second != version
    assert storage.replace_versioned(key, b"four", version) is None  # stale version
    assert storage.read_bytes(key) == b"three"
    assert not storage.delete_versioned(key, version)
    assert storage.delete_versioned(key, second)
    assert storage.replace_versioned(key, b"five", second) is None  # gone
    assert storage.list(f"{RUN_ID}/leases/") == []


def test_of_many_processes_taking_one_lease_one_wins(local, project):
    """Threads stand in for processes: each Leases is its own owner with its own token."""
    key = {f"{RUN_ID}/leases/{MODEL}.0.json": "the model"}
    barrier = threading.Barrier(8)
    won: list[Leases] = []
    refused: list[LeaseHeld] = []

    def take(i: int) -> None:
        leases = Leases(LocalStorage(project / "out"), key, command=f"taker {i}")
        barrier.wait()
        try:
            leases.acquire()
            won.append(leases)
        except LeaseHeld as e:
            refused.append(e)

    threads = [threading.Thread(target=take, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(refused) == 7
    assert {e.owner.command for e in refused if e.owner} <= {won[0].owner.command}
    won[0].release()
    assert not (project / "out" / RUN_ID / "leases").exists()  # the folder goes with its last lease


@pytest.mark.parametrize("value", ["soon", "0", "-5", "nan", "inf"])
def test_a_bad_lease_length_is_bad_input(project, local, capsys, monkeypatch, value):
    write(project / "questions.jsonl", questions(2))
    write(project / "models.yaml", local.config())
    monkeypatch.setenv("MEDBENCH_LEASE_SECONDS", value)
    assert run_cli("run", "models.yaml") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: MEDBENCH_LEASE_SECONDS=") and "\n" not in err
    assert not (project / "out").exists()


def test_collect_leaves_leases_behind(project, where):
    """A lease says who runs a model now, on that store: a local copy has no use for it."""
    stage(project, where)
    holder = Leases(where.storage(), {f"{RUN_ID}/leases/{MODEL}.0.json": "the model"}, command="runner")
    holder.acquire()
    try:
        argv = ["collect", RUN_ID, "--from", where.output, "--dest", "col"]
        assert run_cli(*argv, *(["--endpoint", where.endpoint] if where.endpoint else [])) == 0
    finally:
        holder.release()
    assert (project / "col" / RUN_ID / "run.json").is_file()
    assert not (project / "col" / RUN_ID / "leases").exists()


def test_a_store_that_refuses_conditional_writes_still_gives_leases(s3):
    """Some gateways answer 501 NotImplemented to If-None-Match: check, then write, instead."""
    storage = open_storage(s3.url(), endpoint_url=s3.endpoint)
    key = f"{RUN_ID}/leases/{MODEL}.0.json"

    def refuse_the_next_conditional_put() -> None:
        s3.proxy.fail(times=1, status=501, code="NotImplemented", message="A header you provided implies "
                      "functionality that is not implemented", method="PUT", path_contains="/leases/")

    refuse_the_next_conditional_put()
    first = Leases(storage, {key: "the model"}, command="launcher run", ttl=30)
    first.acquire()
    try:
        assert s3.proxy.pending_faults() == 0
        with pytest.raises(LeaseHeld, match=r"is being run by launcher run \("):
            Leases(storage, {key: "the model"}, command="runner").acquire()
        refuse_the_next_conditional_put()
        first.renew()  # If-Match refused too
        assert first.lost is None and s3.proxy.pending_faults() == 0
    finally:
        first.release()
    assert s3.keys(f"runs/{RUN_ID}/leases/") == []
