"""Leases: at most one process runs a model (or one shard of it) of a run at a time.

Two ``launcher run --run-id X`` at once, a local run beside the cluster's pods, or a Job's
retry that starts while the old pod still finishes would otherwise each answer every question
(and each pay for it). A lease is a small JSON object in the run's storage
(``<run>/leases/<model_dir>.<shard>.json``, ``runner.artefacts.keys``) naming its owner (host,
pid, user, the pod's name in a cluster), renewed on a background thread while the model runs,
and deleted at the end.

- Taking a free lease is a conditional create (S3 ``If-None-Match: *``; locally, the check and
  the write under a lock on the folder), so of two processes only one gets it.
- A lease whose owner stopped renewing it (a crash, SIGKILL, a node lost) is stale once it
  expires: ``MEDBENCH_LEASE_SECONDS`` (default 60) after its last renewal, or at once when its
  owner is a process of this machine that no longer exists. A stale lease is taken over with
  a conditional replace (S3 ``If-Match: <etag>``), so two takers cannot both win.
- Every write is read back: on a store that ignores conditional headers (older Ceph, some
  gateways) two processes that start within the same instant may both write, and the read-back
  tells the loser. The owner checks again at every renewal; a process that finds its lease
  taken (``lost``) stops at its next answer.

``Leases`` holds several at once (``launcher run`` takes every model's before it starts, all
or none), so a second run is refused (``LeaseHeld``, exit 1: not the user's input, and the
same command succeeds later) or, asked to wait, waits until the first is done.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from runner.env import env_seconds
from runner.errors import LeaseHeld, LeaseLost, StorageError, StorageNotFound
from runner.storage.base import Storage

log = logging.getLogger("medbench.lease")

ENV_SECONDS = "MEDBENCH_LEASE_SECONDS"
DEFAULT_SECONDS = 60.0
#: How much of a lease's life passes between renewals: three chances before it expires.
RENEW_FRACTION = 1 / 3
#: Longest pause between two looks at a held lease while waiting for it.
MAX_POLL_S = 5.0


def lease_seconds() -> float:
    """How long a lease lives without renewal: ``MEDBENCH_LEASE_SECONDS``, default 60."""
    return env_seconds(ENV_SECONDS, DEFAULT_SECONDS)


def _machine() -> str:
    """Where a pid means something: the host and, on Linux, the pid namespace (containers that
    share a host name, as with --network host, have their own pids)."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return f"{socket.gethostname()}|{namespace}"


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user without a passwd entry
        return str(os.getuid()) if hasattr(os, "getuid") else "?"


@dataclass(frozen=True)
class Owner:
    """Who holds a lease: enough for a person to find the process, and for a process on the
    same machine to tell whether it is still alive."""

    command: str
    host: str
    pid: int
    user: str
    pod: str | None = None
    machine: str = ""

    @classmethod
    def this_process(cls, command: str) -> Owner:
        # In a pod the host name is the pod's name; KUBERNETES_SERVICE_HOST says we are in one.
        pod = os.environ.get("HOSTNAME") if os.environ.get("KUBERNETES_SERVICE_HOST") else None
        return cls(command=command, host=socket.gethostname(), pid=os.getpid(), user=_user(),
                   pod=pod or None, machine=_machine())

    def describe(self) -> str:
        who = f"pod {self.pod}" if self.pod else f"{self.user}@{self.host}, pid {self.pid}"
        return f"{self.command} ({who})"

    def is_gone(self) -> bool:
        """True only when certain: a process of this machine that no longer exists."""
        if os.name == "nt" or not self.machine or self.machine != _machine() or self.pid == os.getpid():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except OSError:  # alive under another user, or cannot tell
            return False
        return False


@dataclass
class LeaseRecord:
    """The content of one lease object."""

    token: str
    owner: Owner
    ttl_s: float
    acquired_at: float
    renewed_at: float
    expires_at: float
    what: str = ""

    def dumps(self) -> bytes:
        body = asdict(self)
        body["expires"] = datetime.fromtimestamp(self.expires_at, UTC).isoformat(timespec="seconds")
        return json.dumps(body, indent=2, ensure_ascii=False).encode("utf-8")

    @classmethod
    def loads(cls, data: bytes) -> LeaseRecord | None:
        """The record, or None when it is not one (a store that tore a write; treated as stale)."""
        try:
            body: Any = json.loads(data.decode("utf-8"))
            fields = ("command", "host", "pid", "user", "pod", "machine")
            owner = Owner(**{k: body["owner"][k] for k in fields})
            return cls(token=str(body["token"]), owner=owner, ttl_s=float(body["ttl_s"]),
                       acquired_at=float(body["acquired_at"]), renewed_at=float(body["renewed_at"]),
                       expires_at=float(body["expires_at"]), what=str(body.get("what", "")))
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            return None


@dataclass
class _Seen:
    """A held lease as we last saw it: unchanged for longer than its life means nobody renews it."""

    version: str
    since: float = field(default_factory=time.monotonic)


class Leases:
    """Several leases taken together (all or none), renewed on one thread, released together.

    ``keys`` maps each lease key to what it covers, for messages ("run X: model Y shard 2/4").
    """

    def __init__(self, storage: Storage, keys: dict[str, str], *, command: str,
                 ttl: float | None = None, owner: Owner | None = None):
        self.storage = storage
        self.keys = dict(sorted(keys.items()))  # one order for every process: no deadlock
        self.ttl = ttl if ttl is not None else lease_seconds()
        self.owner = owner or Owner.this_process(command)
        self.token = uuid.uuid4().hex
        self.acquired_at = time.time()
        self._versions: dict[str, str] = {}
        self._seen: dict[str, _Seen] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lost: str | None = None

    # --- taking them ---------------------------------------------------------------------

    def acquire(self, *, wait: bool = False, hint: str = "",
                on_wait: Callable[[str, Owner | None], None] | None = None,
                poll: float | None = None) -> None:
        """Take every lease, or raise ``LeaseHeld`` naming the holder (``wait``: until free)."""
        poll = poll if poll is not None else min(self.ttl / 4, MAX_POLL_S)
        told: tuple[str, str] | None = None
        while True:
            blocked = self._try_all()
            if blocked is None:
                self._start_renewing()
                return
            key, holder = blocked
            what = self.keys[key]
            if not wait:
                who = holder.describe() if holder else "another process"
                raise LeaseHeld(f"{what} is being run by {who} right now"
                                + (f"; {hint}" if hint else ""), key=key, owner=holder)
            if on_wait is not None and told != (key, holder.describe() if holder else ""):
                told = (key, holder.describe() if holder else "")
                on_wait(what, holder)
            time.sleep(poll * random.uniform(0.8, 1.2))

    def _try_all(self) -> tuple[str, Owner | None] | None:
        """None when every lease is ours; else the first held one and its holder (we keep none)."""
        for key in self.keys:
            if key in self._versions:
                continue
            holder = self._try(key)
            if holder is not False:
                self._give_back()
                return key, holder if isinstance(holder, Owner) else None
        return None

    def _try(self, key: str) -> Owner | None | bool:
        """False when the lease is now ours; else its holder (None: unknown, it just changed)."""
        for _ in range(3):  # a lease that vanishes or appears under us: look again
            try:
                data, version = self.storage.read_versioned(key)
            except StorageNotFound:
                created = self.storage.create_new(key, self._record(key).dumps())
                if created is None:
                    continue  # someone created it between our read and our write
                return self._confirm(key)
            record = LeaseRecord.loads(data)
            if record is not None and record.token == self.token:
                self._versions[key] = version
                return False
            why = "unreadable" if record is None else self._stale(key, record, version)
            if record is not None and why is None:
                return record.owner
            log.warning("%s: taking over the lease of %s: %s", self.keys[key],
                        record.owner.describe() if record else "an unknown owner", why)
            if self.storage.replace_versioned(key, self._record(key).dumps(), version) is None:
                continue  # renewed or taken by someone else meanwhile
            return self._confirm(key)
        return None

    def _confirm(self, key: str) -> Owner | None | bool:
        """Read our write back: on a store that ignored the condition, another write may have won."""
        try:
            data, version = self.storage.read_versioned(key)
        except StorageNotFound:
            return None
        record = LeaseRecord.loads(data)
        if record is None or record.token != self.token:
            return record.owner if record else None
        self._versions[key] = version
        return False

    def _stale(self, key: str, record: LeaseRecord, version: str) -> str | None:
        """Why the lease is stale, or None while its owner keeps it."""
        if record.owner.is_gone():
            return "its process is gone"
        if time.time() > record.expires_at:
            return "it expired"
        # Clocks of two machines may disagree; our own clock also sees a lease nobody renews.
        seen = self._seen.get(key)
        if seen is None or seen.version != version:
            self._seen[key] = _Seen(version)
            return None
        if time.monotonic() - seen.since > record.ttl_s:
            return f"it was not renewed for {record.ttl_s:g} s"
        return None

    def _record(self, key: str) -> LeaseRecord:
        now = time.time()
        return LeaseRecord(token=self.token, owner=self.owner, ttl_s=self.ttl, acquired_at=self.acquired_at,
                           renewed_at=now, expires_at=now + self.ttl, what=self.keys[key])

    def _give_back(self) -> None:
        with self._lock:
            held, self._versions = self._versions, {}
        for key, version in held.items():
            try:
                self.storage.delete_versioned(key, version)
            except StorageError as e:
                log.warning("could not release the lease %s (it expires by itself): %s", key, e)

    # --- holding them --------------------------------------------------------------------

    @property
    def lost(self) -> str | None:
        """Why a lease was lost, once it was; None while every lease is held."""
        return self._lost

    def check(self) -> None:
        """Raise ``LeaseLost`` once a lease was taken over: the caller stops writing."""
        if self._lost is not None:
            raise LeaseLost(self._lost)

    def _start_renewing(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._renew_loop, name="medbench-lease", daemon=True)
        self._thread.start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl * RENEW_FRACTION):
            self.renew()

    def renew(self) -> None:
        """Extend every lease held; a failed write is retried at the next tick."""
        with self._lock:
            for key, version in list(self._versions.items()):
                try:
                    self._renew_one(key, version)
                except StorageError as e:
                    log.warning("%s: could not renew the lease (retrying): %s", self.keys[key], e)

    def _renew_one(self, key: str, version: str) -> None:
        body = self._record(key).dumps()
        written = self.storage.replace_versioned(key, body, version)
        if written is None:  # changed or gone since our last write
            try:
                data, current = self.storage.read_versioned(key)
            except StorageNotFound:
                # Deleted under us (a check-then-delete on a store without conditional
                # deletes): ours again if nobody else took it.
                written = self.storage.create_new(key, body)
            else:
                record = LeaseRecord.loads(data)
                if record is not None and record.token == self.token:
                    self._versions[key] = current  # still ours, under a tag we did not expect
                    return
                return self._lose(key, record.owner if record else None)
            if written is None:
                return self._lose(key, None)
        # Read back: a store that ignored the condition may have let another write win.
        try:
            data, current = self.storage.read_versioned(key)
        except StorageNotFound:
            data, current = b"", ""
        record = LeaseRecord.loads(data)
        if record is not None and record.token == self.token:
            self._versions[key] = current
            return
        self._lose(key, record.owner if record else None)

    def _lose(self, key: str, holder: Owner | None) -> None:
        del self._versions[key]
        who = holder.describe() if holder else "another process"
        self._lost = (f"{self.keys[key]}: {who} took over this model's lease (this process could not "
                      "renew it in time); this process stopped")
        log.error("%s", self._lost)

    # --- letting go ----------------------------------------------------------------------

    def release(self) -> None:
        """Stop renewing and delete every lease still ours (one we lost is left alone)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._give_back()

    def __enter__(self) -> Leases:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
