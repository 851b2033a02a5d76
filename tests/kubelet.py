"""A kubelet and a Job controller in miniature: the Jobs ``launcher submit`` created, run in Docker.

The fake API server (``tests/fakes/k8s_api.py``) stores Jobs and runs nothing. ``Kubelet`` plays
the rest of a one-node cluster: for each Job it creates the pods the Job controller would (one, or
one per index of an Indexed Job, with ``JOB_COMPLETION_INDEX``), turns each pod's spec into one
``docker run`` as a kubelet turns it into a container, watches the containers, and writes the
pods' and the Job's states back to the fake server, so that ``launcher status`` and ``launcher
logs`` read them as they would from a cluster.

From the pod spec, played as a kubelet plays it:

- the image (mapped to a locally built tag: a name not in the map is ``ErrImagePull``), command
  and args (``$(VAR)`` expanded), env with ``secretKeyRef`` read from the fake's Secrets (a
  missing one: ``CreateContainerConfigError``, unless optional) and ``fieldRef`` (``metadata.*``),
  plus what the kubelet adds itself (``KUBERNETES_SERVICE_HOST``/``PORT``, the pod's host name);
- ``runAsUser``/``runAsGroup``/``fsGroup``, ``runAsNonRoot`` (verified against the image's user, as
  the kubelet does), capabilities, ``allowPrivilegeEscalation: false`` (no-new-privileges),
  ``readOnlyRootFilesystem``; seccomp ``RuntimeDefault`` is Docker's default profile;
- volumes: an ``emptyDir`` is an anonymous Docker volume (removed with the pod's container), one
  with ``medium: Memory`` a tmpfs of its ``sizeLimit`` (``--shm-size`` at ``/dev/shm``), a
  ``persistentVolumeClaim`` a named Docker volume the test made;
- limits: memory (``--memory``, swap off as kubelets run), CPU (``--cpus``; the request as
  ``--cpu-shares``); a GPU request cannot be scheduled on this node (``Unschedulable``).

And from the Job spec, as the Job controller does: ``restartPolicy: Never`` means a new pod (a
new container) for every attempt; ``backoffLimit`` (``backoffLimitPerIndex`` for Indexed Jobs)
counts failed pods; ``podFailurePolicy`` rules on exit codes (``FailJob``, ``FailIndex``,
``Ignore``, ``Count``) are applied first. The Job ends ``Complete`` or ``Failed`` (reasons
``BackoffLimitExceeded``, ``PodFailurePolicy``, ``FailedIndexes``).

Not played: scheduling beyond the GPU check (node selectors, affinity, tolerations, priority),
the controller's back-off delay between retries (10 s, 20 s, ...: a retry here starts at once),
``activeDeadlineSeconds``, ``ttlSecondsAfterFinished``, image pulls, and GPUs. A volume, env
source or field path not listed above raises ``NotPlayed``: a test fails rather than run a
container otherwise than a kubelet would.

Containers run with ``--network host``: the test's servers (moto's S3, the OpenAI and Gemini
fakes, the fake API server) bind 127.0.0.1 only, as every server a test starts must, and a
container on Docker's bridge network could not reach them. In a cluster the pods reach storage
and APIs at their real addresses, which ``cluster.s3_endpoint`` and ``base_url`` name.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest

from launcher.k8s.sizing import quantity_bytes
from tests.fakes.k8s_api import FakeKubernetes

LABEL = "medbench.test.kubelet"  # on every container this module starts, for clean-up
INDEX_KEY = "batch.kubernetes.io/job-completion-index"


def docker(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:3])} ...: {done.stderr.strip() or done.stdout.strip()}")
    return done


def require_docker(base: str) -> None:
    """Skip the calling test module (one line in pytest's summary) unless a Docker daemon answers
    and holds the base image the runner images are built from."""
    why = docker_unavailable()
    if why is None and docker("image", "inspect", base, check=False).returncode != 0:
        why = (f"no base image {base} (bash scripts/local-base-image.sh makes local/python:3.11-slim; "
               "MEDBENCH_IMAGES_BASE names another)")
    if why:
        pytest.skip(f"container tests: {why}", allow_module_level=True)


def docker_unavailable() -> str | None:
    """Why containers cannot run here, or None when a Docker daemon answers."""
    if shutil.which("docker") is None:
        return "no docker client (apt-get install docker.io; scripts/test.sh does in CI)"
    try:
        done = docker("info", "--format", "{{.ServerVersion}}", check=False, timeout=30)
    except subprocess.TimeoutExpired:
        return "the Docker daemon does not answer within 30 s"
    if done.returncode != 0:
        said = (done.stderr.strip().splitlines() or [""])[-1][:160]
        return f"no Docker daemon answers ({said}; start dockerd: scripts/test.sh does in CI)"
    return None


class NotPlayed(Exception):
    """The pod uses a part of the pod spec this harness does not play (a configMap volume, a
    resourceFieldRef, ...). The test stops here rather than run the container otherwise than a
    kubelet would; a Job that needs it needs the harness taught it first."""


class PodError(Exception):
    """A pod the kubelet cannot start: it stays Pending with this waiting reason."""

    def __init__(self, reason: str, message: str, *, unschedulable: bool = False):
        super().__init__(f"{reason}: {message}")
        self.reason, self.message, self.unschedulable = reason, message, unschedulable


@dataclass
class Attempt:
    """One pod of a Job: one container, run once (restartPolicy Never)."""

    pod: str
    namespace: str
    index: int | None
    started: bool = False
    exit_code: int | None = None
    oom_killed: bool = False
    log: str = ""

    @property
    def finished(self) -> bool:
        return self.exit_code is not None


@dataclass
class JobRun:
    """The Job controller's view of one Job while the kubelet runs it."""

    name: str
    job: dict
    attempts: list[Attempt] = field(default_factory=list)
    failures: dict[int | None, int] = field(default_factory=dict)
    succeeded: set[int | None] = field(default_factory=set)
    failed_indexes: set[int | None] = field(default_factory=set)
    state: str = "running"  # running | complete | failed
    reason: str | None = None
    message: str = ""
    start_time: str = ""

    @property
    def indexed(self) -> bool:
        return self.job["spec"].get("completionMode") == "Indexed"

    @property
    def indexes(self) -> list[int | None]:
        return list(range(self.job["spec"].get("completions", 1))) if self.indexed else [None]

    @property
    def active(self) -> list[Attempt]:
        return [a for a in self.attempts if not a.finished]

    def logs(self) -> str:
        return "\n".join(f"--- pod {a.pod} (exit {a.exit_code}{', OOMKilled' if a.oom_killed else ''})"
                         f"\n{a.log}" for a in self.attempts)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cpus(q: str) -> float:
    return float(q[:-1]) / 1000 if q.endswith("m") else float(q)


_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` in command, args and env values; ``$$`` is a literal ``$``."""
    return _VAR.sub(lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), text)


class Kubelet:
    """Runs the Jobs of a fake API server as Docker containers on this machine.

    ``images`` maps the image a Job names to a locally built tag, ``volumes`` a
    PersistentVolumeClaim's name to a Docker volume. ``extra_env`` is added to every container
    after the Job's own variables: test knobs only (say, a shorter lease), named by the test.
    """

    def __init__(self, api: FakeKubernetes, images: Mapping[str, str], *,
                 volumes: Mapping[str, str] | None = None, extra_env: Mapping[str, str] | None = None):
        self.api = api
        self.images = dict(images)
        self.volumes = dict(volumes or {})
        self.extra_env = dict(extra_env or {})
        self.session = uuid.uuid4().hex[:8]

    # --- the Job controller ------------------------------------------------------------------

    def jobs(self, namespace: str = "medbench") -> list[dict]:
        return [j for (ns, _), j in sorted(self.api.jobs.items()) if ns == namespace]

    def start(self, job: dict) -> JobRun:
        """Create the Job's first pods (one per index, up to ``parallelism``) and start them."""
        name = job["metadata"]["name"]
        run = JobRun(name=name, job=job, start_time=_now())
        for index in run.indexes[: job["spec"].get("parallelism", 1)]:
            self._new_pod(run, index)
        self._report(run)
        return run

    def wait(self, run: JobRun, timeout: float = 300, until=None) -> JobRun:
        """Drive the Job until it completes or fails (or ``until(run)`` holds); on timeout, stop its
        containers and fail with every pod's log."""
        deadline = time.monotonic() + timeout
        while run.state == "running" and not (until and until(run)):
            if time.monotonic() > deadline:
                for a in run.active:
                    docker("rm", "-f", "-v", a.pod, check=False)
                raise AssertionError(f"Job {run.name} did not finish within {timeout:g} s:\n{run.logs()}")
            self.step(run)
            time.sleep(0.3)
        return run

    def run(self, job: dict, timeout: float = 300) -> JobRun:
        return self.wait(self.start(job), timeout)

    def step(self, run: JobRun) -> None:
        """Look at each running container once; act on those that stopped."""
        for attempt in run.active:
            if not attempt.started:
                continue  # Pending (CreateContainerConfigError, Unschedulable): stays so
            state = json.loads(docker("inspect", "-f", "{{json .State}}", attempt.pod).stdout)
            if state["Status"] in ("created", "running", "restarting"):
                continue
            attempt.exit_code = int(state["ExitCode"])
            attempt.oom_killed = bool(state["OOMKilled"])
            attempt.log = self._log(attempt.pod)
            self._report_terminated(attempt, state)
            self._pod_finished(run, attempt)
        self._report(run)

    def kill(self, attempt: Attempt) -> None:
        """SIGKILL the pod's container, as a node that dies or a `docker kill` would."""
        docker("kill", attempt.pod)

    def close(self) -> None:
        """Remove every container this kubelet started (and their emptyDir volumes)."""
        ids = docker("ps", "-aq", "--filter", f"label={LABEL}={self.session}", check=False).stdout.split()
        if ids:
            docker("rm", "-f", "-v", *ids, check=False)

    def _pod_finished(self, run: JobRun, attempt: Attempt) -> None:
        idx = attempt.index
        if attempt.exit_code == 0:
            run.succeeded.add(idx)
        else:
            action = self._failure_action(run, attempt)
            if action == "FailJob":
                where = f" at index {idx}" if idx is not None else ""
                self._fail(run, "PodFailurePolicy",
                           f"Container runner for pod {attempt.pod} failed with exit code "
                           f"{attempt.exit_code} matching FailJob rule{where}")
                return
            if action == "Ignore":
                self._new_pod(run, idx)
                return
            run.failures[idx] = run.failures.get(idx, 0) + 1
            if action == "FailIndex":
                run.failed_indexes.add(idx)
            elif run.indexed and run.failures[idx] > run.job["spec"].get("backoffLimitPerIndex", 6):
                run.failed_indexes.add(idx)
            elif not run.indexed and sum(run.failures.values()) > run.job["spec"].get("backoffLimit", 6):
                self._fail(run, "BackoffLimitExceeded", "Job has reached the specified backoff limit")
                return
            else:
                self._new_pod(run, idx)  # restartPolicy Never: the retry is a new pod
        if run.active:
            return
        if set(run.indexes) <= run.succeeded | run.failed_indexes:
            if run.failed_indexes:
                self._fail(run, "FailedIndexes", "Job has failed indexes")
            else:
                run.state = "complete"

    def _failure_action(self, run: JobRun, attempt: Attempt) -> str:
        for rule in (run.job["spec"].get("podFailurePolicy") or {}).get("rules", []):
            codes = rule.get("onExitCodes")
            if not codes:
                continue  # onPodConditions (DisruptionTarget): no disruptions on this node
            hit = attempt.exit_code in codes["values"]
            if hit == (codes["operator"] == "In"):
                return rule["action"]
        return "Count"

    def _fail(self, run: JobRun, reason: str, message: str) -> None:
        run.state, run.reason, run.message = "failed", reason, message
        for other in run.active:  # the controller deletes the Job's remaining pods
            if other.started:
                docker("kill", other.pod, check=False)
                docker("wait", other.pod, check=False)
                other.log = self._log(other.pod)
            other.exit_code = 137

    # --- the kubelet -------------------------------------------------------------------------

    def _new_pod(self, run: JobRun, index: int | None) -> None:
        ns = run.job["metadata"]["namespace"]
        pod_name = self.api.add_pod(ns, run.name, index=index, phase="Pending")
        attempt = Attempt(pod=pod_name, namespace=ns, index=index)
        run.attempts.append(attempt)
        pod = self.api.pods[(ns, pod_name)]
        try:
            argv = self.docker_run_args(pod)
        except PodError as e:
            self._report_waiting(pod, e)
            return
        docker("run", *argv)
        attempt.started = True
        c = pod["spec"]["containers"][0]
        self.api.set_pod_status(ns, pod_name, {
            "phase": "Running", "startTime": _now(),
            "containerStatuses": [{"name": c["name"], "image": c["image"], "imageID": self._image_id(c),
                                   "ready": True, "restartCount": 0, "started": True,
                                   "state": {"running": {"startedAt": _now()}}}]})

    def docker_run_args(self, pod: dict) -> list[str]:
        """``docker run`` arguments for the pod's one container, or PodError if it cannot start."""
        meta, spec = pod["metadata"], pod["spec"]
        (c,) = spec["containers"]  # the rendered Jobs have one container, no init containers
        res = c.get("resources") or {}
        limits, requests = res.get("limits") or {}, res.get("requests") or {}
        if "nvidia.com/gpu" in limits or "nvidia.com/gpu" in requests:  # scheduled before pulled
            raise PodError("Unschedulable", "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.",
                           unschedulable=True)
        image = self.images.get(c["image"])
        if image is None:
            raise PodError("ErrImagePull", f'failed to pull image "{c["image"]}": not on this node')
        psc, csc = spec.get("securityContext") or {}, c.get("securityContext") or {}
        sc = {**psc, **csc}  # the container's settings win over the pod's
        args = ["-d", "--name", meta["name"], "--hostname", meta["name"], "--network", "host",
                "--label", f"{LABEL}={self.session}"]
        user, group = sc.get("runAsUser"), sc.get("runAsGroup")
        if user is not None:
            args += ["--user", f"{user}:{group}" if group is not None else str(user)]
        if sc.get("runAsNonRoot"):
            self._verify_non_root(image, user)
        for g in ([psc["fsGroup"]] if "fsGroup" in psc else []) + list(psc.get("supplementalGroups") or []):
            args += ["--group-add", str(g)]
        caps = csc.get("capabilities") or {}
        args += [a for cap in caps.get("drop") or [] for a in ("--cap-drop", cap)]
        args += [a for cap in caps.get("add") or [] for a in ("--cap-add", cap)]
        if csc.get("allowPrivilegeEscalation") is False:
            args += ["--security-opt", "no-new-privileges"]
        if csc.get("readOnlyRootFilesystem"):
            args.append("--read-only")
        if (sc.get("seccompProfile") or {}).get("type") == "Unconfined":
            args += ["--security-opt", "seccomp=unconfined"]
        if "memory" in limits:
            mem = str(quantity_bytes(limits["memory"]))
            args += ["--memory", mem, "--memory-swap", mem]
        if "cpu" in limits:
            args += ["--cpus", f"{_cpus(limits['cpu']):g}"]
        if "cpu" in requests:
            args += ["--cpu-shares", str(max(2, int(_cpus(requests["cpu"]) * 1024)))]
        args += self._mounts(spec, c)
        env = self._env(pod, c)
        for name, value in env.items():
            args += ["-e", f"{name}={value}"]
        command = [expand(x, env) for x in c.get("command") or []]
        cargs = [expand(x, env) for x in c.get("args") or []]
        if command:
            args += ["--entrypoint", command[0], image, *command[1:], *cargs]
        else:
            args += [image, *cargs]
        return args

    def _verify_non_root(self, image: str, user: int | None) -> None:
        if user is None:
            image_user = docker("image", "inspect", "-f", "{{.Config.User}}", image).stdout.strip()
            name = image_user.split(":")[0]
            if not name.isdigit():
                raise PodError("CreateContainerConfigError", "container has runAsNonRoot and image has "
                               f"non-numeric user ({name or 'none'}), cannot verify user is non-root")
            user = int(name)
        if user == 0:
            raise PodError("CreateContainerConfigError",
                           "container has runAsNonRoot and image will run as root")

    def _mounts(self, spec: dict, c: dict) -> list[str]:
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        out: list[str] = []
        for m in c.get("volumeMounts") or []:
            vol, path = volumes[m["name"]], m["mountPath"]
            ro = ",readonly" if m.get("readOnly") else ""
            if "emptyDir" in vol:
                ed = vol["emptyDir"] or {}
                if ed.get("medium") == "Memory":
                    size = quantity_bytes(ed["sizeLimit"]) if ed.get("sizeLimit") else None
                    if path == "/dev/shm":
                        out += ["--shm-size", str(size or 64 * 2**20)]
                    else:
                        out += ["--tmpfs", f"{path}:mode=1777" + (f",size={size}" if size else "")]
                else:
                    out += ["--mount", f"type=volume,destination={path}{ro}"]  # removed with the pod
            elif "persistentVolumeClaim" in vol:
                claim = vol["persistentVolumeClaim"]["claimName"]
                if claim not in self.volumes:
                    raise PodError("Unschedulable", f'persistentvolumeclaim "{claim}" not found',
                                   unschedulable=True)
                out += ["--mount", f"type=volume,source={self.volumes[claim]},destination={path}{ro}"]
            else:
                raise NotPlayed(f"volume {m['name']}: only emptyDir and persistentVolumeClaim are played")
        return out

    def _env(self, pod: dict, c: dict) -> dict[str, str]:
        meta = pod["metadata"]
        host = urlsplit(self.api.url)
        # What every pod gets from the kubelet (the runner reads KUBERNETES_SERVICE_HOST to know it
        # runs in a pod); the host name comes from --hostname.
        env = {"KUBERNETES_SERVICE_HOST": host.hostname or "", "KUBERNETES_SERVICE_PORT": str(host.port)}
        for e in c.get("env") or []:
            if "value" in e:
                env[e["name"]] = expand(e["value"], env)
                continue
            src = e["valueFrom"]
            if "secretKeyRef" in src:
                value = self._secret(meta["namespace"], src["secretKeyRef"])
                if value is not None:
                    env[e["name"]] = value
            elif "fieldRef" in src:
                env[e["name"]] = _field(pod, src["fieldRef"]["fieldPath"])
            else:
                raise NotPlayed(f"env {e['name']}: {sorted(src)} is not played")
        env.update(self.extra_env)
        return env

    def _secret(self, namespace: str, ref: dict) -> str | None:
        secret = self.api.objects.get(("secrets", namespace, ref["name"]))
        data = (secret or {}).get("data") or {}
        if ref["key"] not in data:
            if ref.get("optional"):
                return None
            what = f'secret "{ref["name"]}" not found' if secret is None else \
                f'couldn\'t find key {ref["key"]} in Secret {namespace}/{ref["name"]}'
            raise PodError("CreateContainerConfigError", what)
        return base64.b64decode(data[ref["key"]]).decode()

    def _image_id(self, c: dict) -> str:
        return docker("image", "inspect", "-f", "{{.Id}}", self.images[c["image"]]).stdout.strip()

    def _log(self, container: str) -> str:
        done = subprocess.run(["docker", "logs", container], capture_output=True, text=True, timeout=60)
        return done.stdout + done.stderr

    # --- what the API server sees ------------------------------------------------------------

    def _report_waiting(self, pod: dict, e: PodError) -> None:
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        if e.unschedulable:
            status = {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                                                          "reason": "Unschedulable", "message": e.message}]}
        else:
            c = pod["spec"]["containers"][0]
            status = {"phase": "Pending", "containerStatuses": [{
                "name": c["name"], "image": c["image"], "imageID": "", "ready": False, "restartCount": 0,
                "state": {"waiting": {"reason": e.reason, "message": e.message}}}]}
        self.api.set_pod_status(ns, name, status)

    def _report_terminated(self, attempt: Attempt, state: dict) -> None:
        ns = attempt.namespace
        pod = self.api.pods[(ns, attempt.pod)]
        c = pod["spec"]["containers"][0]
        reason = "OOMKilled" if attempt.oom_killed else ("Completed" if attempt.exit_code == 0 else "Error")
        self.api.set_pod_status(ns, attempt.pod, {
            "phase": "Succeeded" if attempt.exit_code == 0 else "Failed",
            "startTime": pod["status"].get("startTime"),
            "containerStatuses": [{
                "name": c["name"], "image": c["image"], "imageID": self._image_id(c), "ready": False,
                "restartCount": 0, "started": False, "state": {"terminated": {
                    "exitCode": attempt.exit_code, "reason": reason,
                    "startedAt": state["StartedAt"][:19] + "Z",
                    "finishedAt": state["FinishedAt"][:19] + "Z"}}}],
        }, log=attempt.log)

    def _report(self, run: JobRun) -> None:
        ns = run.job["metadata"]["namespace"]
        if (ns, run.name) not in self.api.jobs:
            return  # deleted (launcher cancel)
        status: dict = {"startTime": run.start_time, "active": len(run.active),
                        "ready": sum(1 for a in run.active if a.started),
                        "succeeded": len(run.succeeded), "failed": sum(run.failures.values())}
        if run.indexed:
            status["completedIndexes"] = _ranges(run.succeeded)
            if run.failed_indexes:
                status["failedIndexes"] = _ranges(run.failed_indexes)
        if run.state == "complete":
            status["completionTime"] = _now()
            status["conditions"] = [{"type": "SuccessCriteriaMet", "status": "True"},
                                    {"type": "Complete", "status": "True"}]
        elif run.state == "failed":
            status["conditions"] = [{"type": "FailureTarget", "status": "True", "reason": run.reason},
                                    {"type": "Failed", "status": "True", "reason": run.reason,
                                     "message": run.message}]
        self.api.set_job_status(ns, run.name, status)


def _field(pod: dict, path: str) -> str:
    meta = pod["metadata"]
    m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if m:
        return (meta.get(m.group(1)) or {}).get(m.group(2), "")
    if path in ("metadata.name", "metadata.namespace", "metadata.uid"):
        return meta[path.split(".")[1]]
    raise NotPlayed(f"fieldRef {path} is not played")


def _ranges(indexes: set[int | None]) -> str:
    return ",".join(str(i) for i in sorted(i for i in indexes if i is not None))


def containers_left(session: str | None = None) -> Iterator[str]:
    """Containers a kubelet of these tests left behind (none, once every test cleaned up)."""
    selector = f"label={LABEL}={session}" if session else f"label={LABEL}"
    yield from docker("ps", "-aq", "--filter", selector, check=False).stdout.split()
