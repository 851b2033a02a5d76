"""The one module that talks to the Kubernetes API, through the official ``kubernetes`` client.

Every call goes through ``Cluster._call``: the single choke point that turns ``ApiException``,
urllib3 transport errors and kubeconfig problems into ``ClusterError`` with a message a person can
act on (which server, which namespace, what to check), chained with ``from`` so ``-v`` keeps the
cause. Nothing else in medbench imports ``kubernetes``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from runner.errors import ClusterError

from .render import ANN_MODEL_DIR, ANN_RUN_ID, ANN_SPEC_HASH, model_selector, selector

T = TypeVar("T")

DEFAULT_NAMESPACE = "medbench"
# (connect, read) seconds: an unreachable server fails fast instead of hanging the CLI.
TIMEOUT = (10, 60)
FIELD_MANAGER = "medbench-launcher"


class _NotFound(Exception):
    """A 404 the caller asked to see (``allow_404``); never leaves this module."""


class NotAllowed(ClusterError):
    """A 403 the caller asked to see (``allow_403``): our role may not read this (preflight skips it)."""


@dataclass
class PodInfo:
    name: str
    phase: str
    reason: str | None = None
    index: int | None = None


@dataclass
class JobInfo:
    """What ``launcher status`` shows for one model's Job."""

    name: str
    model_dir: str
    state: str  # pending | running | complete | failed | suspended
    reason: str | None = None
    active: int = 0
    succeeded: int = 0
    failed: int = 0
    start_time: str | None = None
    completion_time: str | None = None
    pods: list[PodInfo] = field(default_factory=list)

    @property
    def display(self) -> str:
        return f"{self.state}: {self.reason}" if self.reason else self.state


class Cluster:
    """A connection to one cluster and namespace."""

    def __init__(self, namespace: str | None = None, *, kubeconfig: str | None = None,
                 context: str | None = None):
        from kubernetes import client

        self.api_client, default_ns = _load_config(kubeconfig, context)
        self.namespace = namespace or default_ns or DEFAULT_NAMESPACE
        self.host = self.api_client.configuration.host
        self.batch = client.BatchV1Api(self.api_client)
        self.core = client.CoreV1Api(self.api_client)

    # --- the choke point ---------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[..., T], *args: Any, allow_404: bool = False,
              allow_403: bool = False, **kwargs: Any) -> T:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn(*args, _request_timeout=TIMEOUT, **kwargs)
        except ApiException as e:
            if e.status == 404 and allow_404:
                raise _NotFound(what) from e
            if e.status == 403 and allow_403:
                raise NotAllowed(self._api_message(what, e)) from e
            raise ClusterError(self._api_message(what, e)) from e
        except (HTTPError, OSError) as e:
            raise ClusterError(
                f"cannot reach the Kubernetes API server at {self.host} ({what}): {_root_cause(e)}; "
                "check the cluster is up and --context/--kubeconfig point at it"
            ) from e

    def _api_message(self, what: str, e: Any) -> str:
        message = _status_message(e)
        ns = self.namespace
        if e.status == 401:
            return f"the Kubernetes API at {self.host} did not accept our credentials ({what}): {message}; " \
                   "log in again or pick another --context"
        if e.status == 403:
            return f"not allowed to {what} in namespace '{ns}': {message}; the launcher needs the " \
                   "medbench-launcher Role of k8s/rbac.yaml bound to your user"
        if e.status == 404 and "namespaces" in message:
            return f"namespace '{ns}' does not exist ({what}); create it with `kubectl apply -k k8s/` " \
                   "or pass --namespace"
        return f"Kubernetes API refused to {what} in namespace '{ns}' (HTTP {e.status}): {message}"

    # --- what the Jobs need (submit's preflight) -------------------------------------------------

    def namespace_exists(self) -> bool:
        """NotAllowed when our role may not read namespaces (most users' may not)."""
        try:
            self._call(f"read namespace {self.namespace}", self.core.read_namespace, self.namespace,
                       allow_404=True, allow_403=True)
        except _NotFound:
            return False
        return True

    def exists(self, kind: str, name: str) -> bool:
        """Whether the PersistentVolumeClaim or ServiceAccount ``name`` exists; NotAllowed on 403."""
        read = {"PersistentVolumeClaim": self.core.read_namespaced_persistent_volume_claim,
                "ServiceAccount": self.core.read_namespaced_service_account}[kind]
        try:
            self._call(f"read {kind} {name}", read, name, self.namespace, allow_404=True, allow_403=True)
        except _NotFound:
            return False
        return True

    def secret_keys(self, name: str) -> set[str] | None:
        """The keys the Secret holds (None: no such Secret); NotAllowed on 403.

        The body is read raw and only its keys are kept: no value is ever decoded or stored.
        """
        try:
            # _preload_content=False: the raw HTTP response, not a V1Secret with decoded values.
            resp: Any = self._call(f"read Secret {name}", self.core.read_namespaced_secret, name,
                                   self.namespace, allow_404=True, allow_403=True, _preload_content=False)
        except _NotFound:
            return None
        try:
            body = json.loads(resp.data)
        except ValueError:
            return set()
        return set(body.get("data") or {}) | set(body.get("stringData") or {})

    # --- jobs --------------------------------------------------------------------------------

    def check_reachable(self) -> None:
        """One cheap authorised request, so a dead or misconfigured cluster fails before staging."""
        self._call("list Jobs", self.batch.list_namespaced_job, self.namespace, limit=1)

    def get_job(self, name: str) -> dict | None:
        try:
            job = self._call(f"read Job {name}", self.batch.read_namespaced_job, name, self.namespace,
                             allow_404=True)
        except _NotFound:
            return None
        return self.api_client.sanitize_for_serialization(job)

    def check_job(self, manifest: dict) -> str:
        """``new`` when no Job has this name, ``same`` when ours is already there.

        Raises ClusterError when a different Job holds the name: replacing it could throw away
        answers already produced, so the user decides.
        """
        name = manifest["metadata"]["name"]
        existing = self.get_job(name)
        if existing is None:
            return "new"
        ann = (existing.get("metadata") or {}).get("annotations") or {}
        want = manifest["metadata"]["annotations"][ANN_SPEC_HASH]
        if ann.get(ANN_SPEC_HASH) == want:
            return "same"
        run = ann.get(ANN_RUN_ID, "?")
        raise ClusterError(
            f"Job {name} already exists in namespace '{self.namespace}' with a different spec "
            f"(run {run}); delete it with `launcher cancel {run}` or change the config, then submit again"
        )

    def create_job(self, manifest: dict, *, dry_run: bool = False) -> str:
        """Create the Job unless an identical one exists; returns created / unchanged / dry-run."""
        from kubernetes.client import V1Job

        if self.check_job(manifest) == "same":
            return "unchanged"
        name = manifest["metadata"]["name"]
        body = V1Job.from_dict(manifest)
        try:
            self._call(f"create Job {name}", self.batch.create_namespaced_job, self.namespace, body,
                       dry_run="All" if dry_run else None, field_manager=FIELD_MANAGER)
        except ClusterError as e:
            # Someone created it between our read and our create: judge it like any existing Job.
            if getattr(e.__cause__, "status", None) == 409 and self.check_job(manifest) == "same":
                return "unchanged"
            raise
        return "dry-run" if dry_run else "created"

    def list_jobs(self, run_id: str) -> list[dict]:
        out = self._call(f"list the Jobs of run {run_id}", self.batch.list_namespaced_job, self.namespace,
                         label_selector=selector(run_id))
        jobs = [self.api_client.sanitize_for_serialization(j) for j in out.items]
        # The label is lossy for very long ids; the annotation holds the exact run id.
        return [j for j in jobs if _ann(j, ANN_RUN_ID) in (run_id, None)]

    def list_pods(self, label_selector: str) -> list[dict]:
        out = self._call("list pods", self.core.list_namespaced_pod, self.namespace,
                         label_selector=label_selector)
        return [self.api_client.sanitize_for_serialization(p) for p in out.items]

    def run_jobs(self, run_id: str) -> list[JobInfo]:
        """Each Job of the run with its state and the reasons its pods give."""
        pods = self.list_pods(selector(run_id))
        infos = []
        for job in self.list_jobs(run_id):
            name = job["metadata"]["name"]
            mine = [p for p in pods if (p["metadata"].get("labels") or {}).get("job-name") == name
                    or (p["metadata"].get("labels") or {}).get("batch.kubernetes.io/job-name") == name]
            infos.append(job_info(job, mine))
        return infos

    def pod_logs(self, run_id: str, model_dir: str, *, tail: int | None = None,
                 shard: int | None = None) -> list[tuple[PodInfo, str]]:
        """The runner's log from each pod of one model's Job, oldest pod first."""
        pods = self.list_pods(model_selector(run_id, model_dir))
        out = []
        for p in sorted(pods, key=lambda p: (p["metadata"].get("creationTimestamp") or "",
                                             p["metadata"]["name"])):
            info = pod_info(p)
            if shard is not None and info.index != shard:
                continue
            if info.phase == "Pending":
                out.append((info, ""))
                continue
            kwargs: dict[str, Any] = {"container": "runner"}
            if tail:
                kwargs["tail_lines"] = tail
            text = self._call(f"read the log of pod {info.name}", self.core.read_namespaced_pod_log,
                              info.name, self.namespace, **kwargs)
            out.append((info, text or ""))
        return out

    def delete_run(self, run_id: str) -> list[str]:
        """Delete every Job of the run; their pods go too (propagation Background)."""
        from kubernetes.client import V1DeleteOptions

        deleted = []
        for job in self.list_jobs(run_id):
            name = job["metadata"]["name"]
            try:
                self._call(f"delete Job {name}", self.batch.delete_namespaced_job, name, self.namespace,
                           propagation_policy="Background",
                           body=V1DeleteOptions(propagation_policy="Background"), allow_404=True)
            except _NotFound:
                continue  # already gone (its TTL ran out meanwhile): the outcome asked for
            deleted.append(name)
        return deleted


def job_states(run_id: str, namespace: str | None = None, *, kubeconfig: str | None = None,
               context: str | None = None, cluster: Cluster | None = None) -> dict[str, str]:
    """``{model_dir: state}`` for every Job of a run, for ``launcher status``.

    The state is ``pending``, ``running``, ``complete``, ``failed`` or ``suspended`` (waiting in a
    Kueue queue), followed by ``: reason`` when pods say why (``pending: ImagePullBackOff``,
    ``failed: OOMKilled (out of memory: over its 1Gi memory limit; ...)``). Models with no Job
    (not submitted, or removed by its TTL) are absent.
    """
    cluster = cluster or Cluster(namespace, kubeconfig=kubeconfig, context=context)
    return {info.model_dir: info.display for info in cluster.run_jobs(run_id)}


# --- reading states ----------------------------------------------------------------------------


def _ann(obj: dict, key: str) -> str | None:
    return ((obj.get("metadata") or {}).get("annotations") or {}).get(key)


def _conditions(obj: dict) -> dict[str, dict]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []
            if c.get("status") == "True"}


def pod_info(pod: dict) -> PodInfo:
    """A pod's phase and the one reason worth showing (why it waits, why it died)."""
    status = pod.get("status") or {}
    labels = pod["metadata"].get("labels") or {}
    idx = labels.get("batch.kubernetes.io/job-completion-index")
    info = PodInfo(name=pod["metadata"]["name"], phase=status.get("phase") or "Unknown",
                   index=int(idx) if idx is not None else None)
    if status.get("reason"):  # Evicted, DeadlineExceeded, Preempting
        info.reason = status["reason"]
        return info
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        last = cs.get("lastState") or {}
        if state.get("waiting") and state["waiting"].get("reason") not in (None, "ContainerCreating"):
            info.reason = state["waiting"]["reason"]  # ImagePullBackOff, CreateContainerConfigError
            return info
        term = state.get("terminated") or last.get("terminated")
        if term and term.get("reason") == "OOMKilled":
            info.reason = _out_of_memory(pod, cs.get("name"))
            return info
        if term and term.get("reason") in ("Error", "ContainerCannotRun"):
            info.reason = f"exit code {term.get('exitCode')}"
            return info
    if info.phase == "Pending":
        sched = next((c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"), None)
        if sched and sched.get("status") == "False":
            msg = sched.get("message") or ""
            info.reason = f"{sched.get('reason') or 'Unschedulable'}" + (f" ({msg})" if msg else "")
    return info


def _out_of_memory(pod: dict, container: str | None) -> str:
    """OOMKilled in words: the limit it went over, and the setting that raises it."""
    containers = (pod.get("spec") or {}).get("containers") or []
    spec: dict = next((c for c in containers if c.get("name") == container), {})
    limit = ((spec.get("resources") or {}).get("limits") or {}).get("memory")
    over = f"over its {limit} memory limit" if limit else "over its memory limit"
    return f"OOMKilled (out of memory: {over}; give the model more with resources: {{memory: ...}})"


def job_info(job: dict, pods: list[dict]) -> JobInfo:
    status = job.get("status") or {}
    conds = _conditions(job)
    # Oldest first, so the last reason is the latest attempt's.
    pods = sorted(pods, key=lambda p: (p["metadata"].get("creationTimestamp") or "", p["metadata"]["name"]))
    pod_infos = [pod_info(p) for p in pods]
    info = JobInfo(
        name=job["metadata"]["name"],
        model_dir=_ann(job, ANN_MODEL_DIR) or job["metadata"]["name"],
        state="pending",
        active=status.get("active") or 0,
        succeeded=status.get("succeeded") or 0,
        failed=status.get("failed") or 0,
        start_time=status.get("startTime"),
        completion_time=status.get("completionTime"),
        pods=pod_infos,
    )
    reasons = [p.reason for p in pod_infos if p.reason]
    if "Complete" in conds or "SuccessCriteriaMet" in conds:
        info.state = "complete"
    elif "Failed" in conds or "FailureTarget" in conds:
        info.state = "failed"
        c = conds.get("Failed") or conds["FailureTarget"]
        # A failed pod's reason (OOMKilled) says more than the Job's (BackoffLimitExceeded).
        failed = [p.reason for p in pod_infos if p.reason and p.phase == "Failed"]
        info.reason = failed[-1] if failed else c.get("reason")
    elif "Suspended" in conds or (job.get("spec") or {}).get("suspend"):
        info.state = "suspended"
        info.reason = "waiting for quota in its queue"
    elif any(p.phase == "Running" for p in pod_infos) or status.get("ready"):
        info.state = "running"
        info.reason = reasons[-1] if reasons else None
    else:
        info.state = "pending"
        info.reason = reasons[-1] if reasons else None
    return info


# --- configuration -----------------------------------------------------------------------------


def _load_config(kubeconfig: str | None, context: str | None):
    """An ApiClient from --kubeconfig/--context, $KUBECONFIG, ~/.kube/config or the pod's account."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    path = kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or "~/.kube/config"
    path = str(Path(path).expanduser())
    in_cluster = "KUBERNETES_SERVICE_HOST" in os.environ
    try:
        if kubeconfig or context or Path(path).exists() or not in_cluster:
            if not Path(path).exists():
                raise ClusterError(
                    f"no kubeconfig at {path}; pass --kubeconfig FILE, set KUBECONFIG, or run inside "
                    "the cluster"
                )
            conf = client.Configuration()
            config.load_kube_config(config_file=path, context=context, client_configuration=conf)
            namespace = _context_namespace(path, context)
        else:
            conf = client.Configuration()
            config.load_incluster_config(client_configuration=conf)
            namespace = _incluster_namespace()
    except ConfigException as e:
        raise ClusterError(f"cannot use kubeconfig {path}: {e}") from e
    except (OSError, ValueError, TypeError, KeyError, AttributeError, yaml.YAMLError) as e:
        # The client parses the file itself and lets whatever it trips on escape.
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ClusterError(f"cannot read kubeconfig {path}: {first}") from e
    # A dead server should fail at once with our message, not after urllib3's retries (each
    # logging a warning); every command is safe to run again.
    conf.retries = 0
    return client.ApiClient(conf), namespace


def _context_namespace(path: str, context: str | None) -> str | None:
    from kubernetes import config

    contexts, active = config.list_kube_config_contexts(path)
    ctx = next((c for c in contexts if c["name"] == context), None) if context else active
    return ((ctx or {}).get("context") or {}).get("namespace")


def _incluster_namespace() -> str | None:
    p = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    return p.read_text().strip() if p.exists() else None


def _status_message(e: Any) -> str:
    """The ``message`` of the API's Status body, else the HTTP reason."""
    try:
        body = json.loads(e.body or "")
        if isinstance(body, dict) and body.get("message"):
            return str(body["message"])
    except (ValueError, TypeError):
        pass
    return str(e.reason or "no details")


def _root_cause(e: BaseException) -> str:
    reason = getattr(e, "reason", None)  # MaxRetryError wraps the real socket error
    while isinstance(reason, BaseException) and getattr(reason, "reason", None) is not None:
        reason = getattr(reason, "reason")  # noqa: B009 - the attribute is not declared
    cause = reason if isinstance(reason, BaseException) else e
    text = str(cause)
    # urllib3 prefixes the connection's repr; keep what a person reads.
    return text.rsplit("Failed to establish a new connection: ", 1)[-1]
