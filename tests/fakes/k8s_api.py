"""A loopback fake of the Kubernetes API server: real HTTP and JSON on 127.0.0.1.

Enough of the API for the launcher, driven through the official ``kubernetes`` client:

- ``batch/v1`` Jobs: create (with ``dryRun=All``), get, list (``labelSelector``), delete
  (``propagationPolicy``; Background also deletes the Job's pods, as the garbage collector would);
- ``v1`` pods: get, list (``labelSelector``) and ``pods/{name}/log``;
- what ``submit``'s preflight reads: namespaces, Secrets, PersistentVolumeClaims and
  ServiceAccounts by name (``apply`` puts them there, as ``kubectl apply`` of k8s/ would; a
  Secret's ``stringData`` is stored base64-encoded under ``data``, as the API server does), and
  ``forbidden``: resources that answer 403, as they do for a user the medbench-launcher Role binds;
- a ``Status`` body with the real reason and code for 404 (NotFound), 409 (AlreadyExists) and
  422 (Invalid: a name that is not a DNS-1123 label), and a ``resourceVersion`` that grows with
  every write.

Nothing runs pods: a test plays the Job controller with ``set_job_status``, ``add_pod`` and
``set_pod_status``, by hand or through ``tests/kubelet.py``, which runs each pod in Docker.
Every request is kept in ``requests`` so a test can assert what was (not) sent.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

from tests.fakes.loopback import serve, shut

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_JOBS = re.compile(r"^/apis/batch/v1/namespaces/(?P<ns>[^/]+)/jobs(?:/(?P<name>[^/]+))?$")
_PODS = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/pods(?:/(?P<name>[^/]+)(?P<log>/log)?)?$")
_NAMESPACE = re.compile(r"^/api/v1/namespaces/(?P<name>[^/]+)$")
_OBJECTS = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/(?P<resource>secrets|persistentvolumeclaims|"
                      r"serviceaccounts)/(?P<name>[^/]+)$")
_KINDS = {"Secret": "secrets", "PersistentVolumeClaim": "persistentvolumeclaims",
          "ServiceAccount": "serviceaccounts"}
_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
K8S_SETUP = Path(__file__).resolve().parents[2] / "k8s"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any = None


@dataclass
class FakeKubernetes:
    """The state of the fake cluster; ``url`` once started."""

    namespaces: set[str] = field(default_factory=lambda: {"default", "medbench"})
    jobs: dict[tuple[str, str], dict] = field(default_factory=dict)
    pods: dict[tuple[str, str], dict] = field(default_factory=dict)
    logs: dict[tuple[str, str], str] = field(default_factory=dict)
    #: Secrets, PVCs and ServiceAccounts by (resource, namespace, name)
    objects: dict[tuple[str, str, str], dict] = field(default_factory=dict)
    #: resources (``secrets``, ``namespaces``, ``jobs``...) this user may not read: they answer 403
    forbidden: set[str] = field(default_factory=set)
    user: str = "alice"  #: the user named in a 403's message
    requests: list[Request] = field(default_factory=list)
    resource_version: int = 1000
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> FakeKubernetes:
        self._server, self._thread, self.url = serve(type("Handler", (_Handler,), {"fake": self}))
        return self

    def stop(self) -> None:
        shut(self._server, self._thread)
        self._server = None

    def kubeconfig(self, namespace: str = "medbench") -> dict:
        """A kubeconfig (as a dict, write it as YAML) whose current context is this server."""
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": "fake-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake",
                                                       "namespace": namespace}}],
            "current-context": "fake",
        }

    # --- playing the admin ---------------------------------------------------------------------

    def apply(self, doc: dict, namespace: str | None = None) -> None:
        """Store a Namespace, Secret, PersistentVolumeClaim or ServiceAccount manifest."""
        with self._lock:
            if doc["kind"] == "Namespace":
                self.namespaces.add(doc["metadata"]["name"])
                return
            obj = copy.deepcopy(doc)
            ns = namespace or obj["metadata"].get("namespace") or "medbench"
            obj["metadata"].update(namespace=ns, uid=str(uuid.uuid4()), resourceVersion=self._bump())
            if doc["kind"] == "Secret":
                data = dict(obj.pop("data", None) or {})
                for k, v in (obj.pop("stringData", None) or {}).items():
                    data[k] = base64.b64encode(str(v).encode()).decode()
                obj["data"] = data
            self.objects[(_KINDS[doc["kind"]], ns, obj["metadata"]["name"])] = obj

    def delete_object(self, kind: str, namespace: str, name: str) -> None:
        with self._lock:
            self.objects.pop((_KINDS[kind], namespace, name))

    # --- playing the Job controller and kubelet ----------------------------------------------

    def _bump(self) -> str:
        self.resource_version += 1
        return str(self.resource_version)

    def _now(self) -> str:
        # A clock that moves one second per write: objects created later sort later.
        return (_EPOCH + timedelta(seconds=self.resource_version)).strftime("%Y-%m-%dT%H:%M:%SZ")

    def set_job_status(self, namespace: str, name: str, status: dict) -> None:
        with self._lock:
            job = self.jobs[(namespace, name)]
            job["status"] = status
            job["metadata"]["resourceVersion"] = self._bump()

    def add_pod(self, namespace: str, job_name: str, *, index: int | None = None, phase: str = "Running",
                status: dict | None = None, log: str = "") -> str:
        """A pod of the Job, labelled as the Job controller labels it, with the Job's template."""
        with self._lock:
            job = self.jobs[(namespace, job_name)]
            suffix = uuid.uuid4().hex[:5]
            name = f"{job_name}-{index}-{suffix}" if index is not None else f"{job_name}-{suffix}"
            template = copy.deepcopy(job["spec"]["template"])
            labels = dict(template.get("metadata", {}).get("labels", {}))
            labels.update({"batch.kubernetes.io/job-name": job_name, "job-name": job_name,
                           "batch.kubernetes.io/controller-uid": job["metadata"]["uid"]})
            annotations = {}
            if index is not None:
                # As the Job controller does for an Indexed Job: the index as a label and an
                # annotation, and JOB_COMPLETION_INDEX in every container read from the annotation.
                labels["batch.kubernetes.io/job-completion-index"] = str(index)
                annotations["batch.kubernetes.io/job-completion-index"] = str(index)
                field_path = "metadata.annotations['batch.kubernetes.io/job-completion-index']"
                for c in template["spec"]["containers"]:
                    c.setdefault("env", []).append({"name": "JOB_COMPLETION_INDEX",
                                                    "valueFrom": {"fieldRef": {"fieldPath": field_path}}})
            self.pods[(namespace, name)] = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": namespace, "labels": labels,
                             "annotations": annotations,
                             "uid": str(uuid.uuid4()), "resourceVersion": self._bump(),
                             "creationTimestamp": self._now(),
                             "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job",
                                                  "name": job_name, "uid": job["metadata"]["uid"],
                                                  "controller": True}]},
                "spec": template["spec"],
                "status": {"phase": phase, **(status or {})},
            }
            self.logs[(namespace, name)] = log
            return name

    def set_pod_status(self, namespace: str, name: str, status: dict, log: str | None = None) -> None:
        """What the kubelet reports as a pod runs: its new ``status`` (phase included), and its log."""
        with self._lock:
            pod = self.pods[(namespace, name)]
            pod["status"] = status
            pod["metadata"]["resourceVersion"] = self._bump()
            if log is not None:
                self.logs[(namespace, name)] = log

    # --- the API -----------------------------------------------------------------------------

    def handle(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        with self._lock:
            self.requests.append(Request(method, path, query, body))
            m = _JOBS.match(path)
            if m and "jobs" in self.forbidden:
                return _forbidden("jobs", m["name"] or "", m["ns"], self.user)
            if m:
                return self._jobs(method, m["ns"], m["name"], query, body)
            m = _PODS.match(path)
            if m:
                return self._pods(method, m["ns"], m["name"], bool(m["log"]), query)
            m = _NAMESPACE.match(path)
            if m and method == "GET":
                if "namespaces" in self.forbidden:
                    return _forbidden("namespaces", m["name"], "", self.user)
                if m["name"] not in self.namespaces:
                    return _status(404, "NotFound", f'namespaces "{m["name"]}" not found', name=m["name"],
                                   kind="namespaces")
                return 200, {"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": m["name"]},
                             "status": {"phase": "Active"}}
            m = _OBJECTS.match(path)
            if m and method == "GET":
                if m["resource"] in self.forbidden:
                    return _forbidden(m["resource"], m["name"], m["ns"], self.user)
                obj = self.objects.get((m["resource"], m["ns"], m["name"]))
                if obj is None:
                    return _status(404, "NotFound", f'{m["resource"]} "{m["name"]}" not found',
                                   name=m["name"], kind=m["resource"])
                return 200, obj
            return _status(404, "NotFound", f"the server could not find the requested resource ({path})")

    def _jobs(self, method: str, ns: str, name: str | None, query: dict, body: Any) -> tuple[int, Any]:
        if name is None and method == "GET":
            items = [j for (n, _), j in sorted(self.jobs.items()) if n == ns and _selected(j, query)]
            return 200, _list("JobList", "batch/v1", items, self.resource_version)
        if name is None and method == "POST":
            return self._create_job(ns, body, dry_run=query.get("dryRun") == ["All"])
        key = (ns, name)
        if key not in self.jobs:
            return _status(404, "NotFound", f'jobs.batch "{name}" not found', name=name, kind="jobs")
        if method == "GET":
            return 200, self.jobs[key]
        if method == "DELETE":
            policy = (query.get("propagationPolicy") or [None])[0]
            if policy is None and isinstance(body, dict):
                policy = body.get("propagationPolicy")
            job = self.jobs.pop(key)
            if policy in ("Background", "Foreground"):
                for pkey in [k for k, p in self.pods.items()
                             if k[0] == ns and p["metadata"]["labels"].get("job-name") == name]:
                    self.pods.pop(pkey)
                    self.logs.pop(pkey, None)
            self._bump()
            return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success",
                         "details": {"name": name, "group": "batch", "kind": "jobs",
                                     "uid": job["metadata"]["uid"]}}
        return _status(405, "MethodNotAllowed", f"{method} is not supported here")

    def _create_job(self, ns: str, body: Any, dry_run: bool) -> tuple[int, Any]:
        if ns not in self.namespaces:
            return _status(404, "NotFound", f'namespaces "{ns}" not found', name=ns, kind="namespaces")
        if not isinstance(body, dict) or body.get("kind") != "Job":
            return _status(400, "BadRequest", "the body is not a Job")
        name = (body.get("metadata") or {}).get("name", "")
        if not _DNS_LABEL.match(name) or len(name) > 63:
            return _status(422, "Invalid", f'Job.batch "{name}" is invalid: metadata.name: Invalid value: '
                           f'"{name}": must be no more than 63 characters and a DNS-1123 label',
                           name=name, kind="Job")
        if body["metadata"].get("namespace", ns) != ns:
            return _status(400, "BadRequest", "the namespace of the object does not match the request")
        if (ns, name) in self.jobs:
            return _status(409, "AlreadyExists", f'jobs.batch "{name}" already exists', name=name,
                           kind="jobs")
        job = copy.deepcopy(body)
        meta = job["metadata"]
        meta.update(namespace=ns, uid=str(uuid.uuid4()), creationTimestamp=self._now(), generation=1)
        job.setdefault("status", {})
        if dry_run:
            meta["resourceVersion"] = str(self.resource_version)
            return 201, job
        meta["resourceVersion"] = self._bump()
        self.jobs[(ns, name)] = job
        return 201, job

    def _pods(self, method: str, ns: str, name: str | None, log: bool, query: dict) -> tuple[int, Any]:
        if method != "GET":
            return _status(405, "MethodNotAllowed", f"{method} is not supported here")
        if name is None:
            items = [p for (n, _), p in sorted(self.pods.items()) if n == ns and _selected(p, query)]
            return 200, _list("PodList", "v1", items, self.resource_version)
        if (ns, name) not in self.pods:
            return _status(404, "NotFound", f'pods "{name}" not found', name=name, kind="pods")
        if not log:
            return 200, self.pods[(ns, name)]
        text = self.logs.get((ns, name), "")
        tail = query.get("tailLines")
        if tail:
            text = "".join(text.splitlines(keepends=True)[-int(tail[0]):])
        return 200, text


def admin_setup(fake: FakeKubernetes, namespace: str = "medbench", *,
                extra_pvcs: tuple[str, ...] = ()) -> None:
    """What an admin applies once (k8s/: the ServiceAccounts, the HF cache PVC) and the Secrets of
    k8s/secrets.example.yaml (placeholder values), into ``namespace``; plus ``extra_pvcs``."""
    fake.namespaces.add(namespace)
    for name in ("serviceaccount.yaml", "pvc.yaml", "secrets.example.yaml"):
        for doc in yaml.safe_load_all((K8S_SETUP / name).read_text()):
            fake.apply(doc, namespace)
    for pvc in extra_pvcs:
        fake.apply({"kind": "PersistentVolumeClaim", "metadata": {"name": pvc}}, namespace)


def _selected(obj: dict, query: dict) -> bool:
    sel = (query.get("labelSelector") or [""])[0]
    labels = obj["metadata"].get("labels", {})
    for term in filter(None, sel.split(",")):
        k, _, v = term.partition("=")
        if labels.get(k) != v:
            return False
    return True


def _forbidden(resource: str, name: str, namespace: str, user: str):
    where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
    group = "batch" if resource == "jobs" else ""
    return _status(403, "Forbidden", f'{resource} "{name}" is forbidden: User "{user}" cannot get resource '
                   f'"{resource}" in API group "{group}"{where}', name=name, kind=resource)


def _list(kind: str, api_version: str, items: list, rv: int) -> dict:
    return {"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": str(rv)},
            "items": items}


def _status(code: int, reason: str, message: str, name: str | None = None, kind: str | None = None):
    details = {k: v for k, v in (("name", name), ("kind", kind)) if v}
    return code, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                  "message": message, "reason": reason, "details": details, "code": code}


class _Handler(BaseHTTPRequestHandler):
    fake: FakeKubernetes
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        code, out = self.fake.handle(self.command, url.path, parse_qs(url.query), body)
        if isinstance(out, str):
            data, ctype = out.encode(), "text/plain"
        else:
            data, ctype = json.dumps(out).encode(), "application/json"
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        # One request per connection, so once stopped the fake is really gone (no kept-alive
        # socket still answering).
        self.send_header("Connection", "close")
        self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _serve

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass
