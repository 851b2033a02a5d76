"""The ``runner`` console script: what a cluster pod runs, one model (or one shard of one).

The Kubernetes Jobs are built against exactly this contract. Each setting is an environment
variable, or the flag beside it (a flag wins):

    MEDBENCH_OUTPUT        where the run lives: s3://bucket/prefix or a folder      --output
    MEDBENCH_RUN_ID        the staged run (its run.json and questions.jsonl)        --run-id
    MEDBENCH_MODEL         the model's folder name (model_dir) or id                --model
    MEDBENCH_SHARDS        shards of this model; default the config's ``shards``    --shards
    JOB_COMPLETION_INDEX   this pod's shard, 0-based (Indexed Job); default 0       --shard
    AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...  for s3://       --endpoint
    MEDBENCH_LOG_INTERVAL  seconds between uploads of the runner's log; default 30
    MEDBENCH_LEASE_SECONDS how long this shard's lease lives without renewal; default 60

The runner reads run.json and questions.jsonl from storage, rebuilds the plan, skips the
answers already stored, writes each new one as it comes, and keeps its own log in storage
(``<model_dir>/runner.log``, or ``shards/<i>.log``) so the log outlives the pod; a restarted pod
appends to it. It first takes the shard's lease (``runner.storage.lease``): a Job's retry that
finds another process still running the shard waits for it to finish, or for its lease to
expire, instead of answering every question a second time.

Exit status: 0 complete; 1 failed (another attempt continues where this one stopped);
2 bad input (unknown model, missing run.json, bad settings), with one line on stderr.
A runner that stops on an error never leaves its manifest saying ``running``: it marks it
``failed`` with the reason, or, when storage will not take even that, says so on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from runner.artefacts.keys import Keys
from runner.artefacts.records import ModelManifest
from runner.artefacts.stored import first_error, load_staged_questions, read_run_info
from runner.backends import backend_class
from runner.config import check_run_id, check_safe_name
from runner.engine.model_run import ModelRun, model_leases
from runner.env import env_seconds, whole_number
from runner.errors import InputError, MedbenchError, StorageError, StorageNotFound
from runner.plan import ModelTask, Plan, plan_from_run
from runner.storage import Storage, open_storage
from runner.storage.lease import DEFAULT_SECONDS, Owner, lease_seconds

log = logging.getLogger("medbench.runner")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@dataclass(frozen=True)
class Target:
    """What this process runs: resolved from flags and the environment, checked."""

    output: str
    run_id: str
    model: str
    shard: int
    shards: int | None
    endpoint: str | None
    log_interval: float
    #: How long this process's lease lives without renewal (MEDBENCH_LEASE_SECONDS).
    lease_seconds: float = DEFAULT_SECONDS
    #: How launcher render sized this Job (MEDBENCH_SIZING), recorded in the manifest.
    sizing: dict | None = None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="runner",
        description="Run one model (or one shard of it) of a staged medbench run. "
        "Every option may instead come from the environment variable in brackets.",
    )
    p.add_argument("--output", help="storage URL: s3://bucket/prefix or a folder [MEDBENCH_OUTPUT]")
    p.add_argument("--run-id", help="the staged run's id [MEDBENCH_RUN_ID]")
    p.add_argument("--model", help="the model's folder name or id [MEDBENCH_MODEL]")
    p.add_argument("--shard", help="this shard, 0-based [JOB_COMPLETION_INDEX]")
    p.add_argument("--shards", help="how many shards [MEDBENCH_SHARDS]; default the config's")
    p.add_argument("--endpoint", help="S3 endpoint URL [AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL]")
    return p.parse_args(argv)


def _setting(flag: str | None, env: str, what: str) -> str:
    value = flag if flag is not None else os.environ.get(env)
    if not value:
        raise InputError(f"{what} is not set: pass --{what} or set {env}")
    return value


def resolve_target(args: argparse.Namespace) -> Target:
    output = _setting(args.output, "MEDBENCH_OUTPUT", "output")
    run_id = _setting(args.run_id, "MEDBENCH_RUN_ID", "run-id")
    model = _setting(args.model, "MEDBENCH_MODEL", "model")
    try:
        check_run_id(run_id)
        check_safe_name(model, "model")
    except ValueError as e:
        raise InputError(str(e)) from None
    shard_raw = args.shard if args.shard is not None else os.environ.get("JOB_COMPLETION_INDEX") or "0"
    shards_raw = args.shards if args.shards is not None else os.environ.get("MEDBENCH_SHARDS")
    return Target(
        output=output,
        run_id=run_id,
        model=model,
        shard=whole_number(shard_raw, "shard (JOB_COMPLETION_INDEX)", minimum=0),
        shards=whole_number(shards_raw, "shards (MEDBENCH_SHARDS)", minimum=1) if shards_raw else None,
        endpoint=args.endpoint,
        log_interval=env_seconds("MEDBENCH_LOG_INTERVAL", 30.0),
        lease_seconds=lease_seconds(),
        sizing=_sizing(os.environ.get("MEDBENCH_SIZING")),
    )


def _sizing(raw: str | None) -> dict | None:
    # Only a record of how the Job was sized: a garbled value must not stop the model.
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        log.warning("MEDBENCH_SIZING is not JSON; the manifest will not record the Job's sizing")
        return None
    return value if isinstance(value, dict) else None


def load_run(storage: Storage, run_id: str) -> Plan:
    """The staged run's plan, from run.json and questions.jsonl; InputError if unusable."""
    keys = Keys(run_id)
    info = read_run_info(storage, run_id, missing=(
        "{where} not found: no run '{run_id}' is staged there "
        "(stage it with `launcher submit`, or check MEDBENCH_OUTPUT and MEDBENCH_RUN_ID)"))
    try:
        questions = load_staged_questions(storage, run_id)
    except StorageNotFound:
        raise InputError(f"{storage.url}/{keys.questions} not found: the run was not fully staged") from None
    try:
        return plan_from_run(info, questions)
    except ValidationError as e:
        where = f"{storage.url}/{keys.run_json}"
        raise InputError(f"{where}: its config is not valid: {first_error(e)}") from None


def pick_task(plan: Plan, target: Target) -> tuple[ModelTask, int]:
    """The model this process runs and its shard count, checked against the config."""
    task = plan.task(target.model)  # ConfigError naming the known models
    shards = target.shards if target.shards is not None else task.spec.shards
    if shards != task.spec.shards:
        raise InputError(
            f"MEDBENCH_SHARDS={shards}, but model '{task.model_dir}' is configured with "
            f"shards: {task.spec.shards}"
        )
    if target.shard >= shards:
        raise InputError(f"shard {target.shard} is out of range: model '{task.model_dir}' has "
                         f"{shards} shard(s), numbered from 0")
    return task, shards


# --- the log that outlives the pod ----------------------------------------------------------


class StorageLog:
    """Copies this process's log lines to a key in storage, every few seconds and at exit.

    A restarted pod first fetches what earlier attempts wrote and appends to it, so one file
    tells the whole story of a model across preemptions.
    """

    def __init__(self, storage: Storage, key: str, interval: float):
        self.storage, self.key, self.interval = storage, key, interval
        fd, name = tempfile.mkstemp(prefix="medbench-runner-", suffix=".log")
        os.close(fd)
        self.path = Path(name)
        self.handler = logging.FileHandler(self.path, encoding="utf-8")
        self.handler.setFormatter(logging.Formatter(LOG_FORMAT))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="log-upload", daemon=True)
        self._uploaded_size = -1
        self._lock = threading.Lock()

    def __enter__(self) -> StorageLog:
        try:
            earlier = self.storage.read_bytes(self.key)
        except StorageNotFound:
            earlier = b""
        except StorageError as e:
            log.warning("could not read the earlier log %s: %s", self.key, e)
            earlier = b""
        self.path.write_bytes(earlier)
        logging.getLogger().addHandler(self.handler)
        self._thread.start()
        return self

    def note(self, line: str) -> None:
        """A line for the stored log only (stderr already has it in its own words)."""
        self.handler.acquire()
        try:
            self.handler.stream.write(line.rstrip("\n") + "\n")  # type: ignore[union-attr]
            self.handler.flush()
        finally:
            self.handler.release()

    def upload(self) -> None:
        with self._lock:
            self.handler.flush()
            size = self.path.stat().st_size
            if size == self._uploaded_size:
                return
            self.storage.upload_file(self.key, self.path)
            self._uploaded_size = size

    def try_upload(self) -> None:
        try:
            self.upload()
        except StorageError as e:  # storage flapping: the next tick or the exit retries
            log.debug("log upload failed: %s", e)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.try_upload()

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        logging.getLogger().removeHandler(self.handler)
        try:
            self.upload()
        except StorageError as e:
            print(f"warning: the runner log was not saved to {self.key}: {e}", file=sys.stderr)
        finally:
            self.handler.close()
            self.path.unlink(missing_ok=True)


class LogProgress:
    """Progress as log lines (a pod has no terminal): about every 5 %, at start and end, and
    what the model waits for (a rate-limit pause, a long retry) when that begins."""

    def __init__(self) -> None:
        self.name, self.total, self.done, self.step, self.next_at = "", 0, 0, 1, 0
        self.last_note = ""

    def start(self, task: ModelTask, total: int, done: int) -> None:
        self.name, self.total, self.done = task.model_dir, total, done
        self.step = max(1, total // 20)
        self.next_at = done + self.step
        if done:
            log.info("%s: resuming: %d of %d answers already stored, %d to go",
                     self.name, done, total, total - done)
        else:
            log.info("%s: %d questions to answer", self.name, total)

    def advance(self, n: int, tokens: int) -> None:
        self.done += n
        if self.done >= self.next_at or self.done == self.total:
            log.info("%s: %d/%d answers", self.name, self.done, self.total)
            self.next_at = self.done + self.step

    def note(self, text: str) -> None:
        # Once per wait: the same words again (the next identical retry) add nothing to the log.
        if text and text != self.last_note:
            log.info("%s: waiting: %s", self.name, text)
        self.last_note = text

    def finish(self, manifest: ModelManifest) -> None:
        log.info("%s: %s (%d/%d answered, %d errors)", manifest.model_dir, manifest.status,
                 manifest.done, manifest.total, manifest.errors)


# --- entry point ----------------------------------------------------------------------------


def _on_sigterm(signum, frame) -> None:
    # Kubernetes sends SIGTERM before it kills a preempted pod: unwind like Ctrl-C so the
    # manifest says "failed: interrupted" and the log is uploaded.
    raise KeyboardInterrupt


def _log_wait(what: str, holder: Owner | None) -> None:
    who = holder.describe() if holder else "another process"
    log.info("%s is being run by %s; waiting until it finishes or its lease expires", what, who)


def run(target: Target) -> int:
    storage = open_storage(target.output, endpoint_url=target.endpoint)
    plan = load_run(storage, target.run_id)
    task, shards = pick_task(plan, target)
    backend_class(task.spec.backend)(task).preflight()
    key = Keys(plan.run_id, task.model_dir).log(target.shard, shards)
    with StorageLog(storage, key, target.log_interval) as stored_log:
        where = f" shard {target.shard + 1}/{shards}" if shards > 1 else ""
        log.info("run %s, model %s%s, storage %s", plan.run_id, task.model_dir, where, storage.url)
        # Stored now, not at the first tick: a pod killed without warning (OOMKilled, a lost node)
        # would otherwise leave no trace of this attempt in the log.
        stored_log.try_upload()
        # A Job's retry (or a second pod of the same index) may start while another process
        # still runs this shard: it waits for that one to finish, or for its lease to expire.
        lease = model_leases(storage, plan, [(task, [target.shard])], command="runner",
                             ttl=target.lease_seconds)
        try:
            lease.acquire(wait=True, on_wait=_log_wait)
            with lease:
                model_run = ModelRun(plan, task, storage, progress=LogProgress(), shard=target.shard,
                                     shards=shards, lease=lease, sizing=target.sizing)
                try:
                    manifest = model_run.run()
                finally:
                    if model_run.stopped_note:
                        stored_log.note(model_run.stopped_note)
        except MedbenchError as e:
            stored_log.note(f"error: {e}")
            raise
        except KeyboardInterrupt:
            stored_log.note("interrupted: the next attempt continues where this one stopped")
            raise
        if manifest.status != "complete":
            stored_log.note(f"error: {manifest.error}")
            print(f"error: {task.model_dir}: {manifest.error}", file=sys.stderr)
            return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr)
    logging.getLogger("medbench").setLevel(logging.INFO)
    # Connection-pool and credential chatter is not about the run; warnings still show.
    for noisy in ("botocore", "boto3", "s3transfer", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return run(resolve_target(args))
    except MedbenchError as e:
        for line in str(e).split("\n") if str(e) else [type(e).__name__]:
            print(f"error: {line}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted: run the same command again to continue where it stopped", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
