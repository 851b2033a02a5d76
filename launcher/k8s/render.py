"""plan → Kubernetes manifests: one ``batch/v1`` Job per model, as plain dicts.

A pure function: no I/O, no clock, no randomness, so ``launcher render`` shows exactly what
``launcher submit`` sends, and the same plan always gives byte-identical manifests (whose hash,
stored in an annotation, is how a resubmit recognises its own Jobs).

The pod contract, shared with ``runner/main.py``: the container runs ``runner`` with

- ``MEDBENCH_OUTPUT`` the storage URL, ``MEDBENCH_RUN_ID``, ``MEDBENCH_MODEL`` (the model folder);
- ``MEDBENCH_SHARDS`` for ``shards: N`` (an Indexed Job; Kubernetes sets ``JOB_COMPLETION_INDEX``);
- what the storage scheme's pods need (``runner.storage.schemes``: for ``s3://``,
  ``AWS_ENDPOINT_URL`` when ``cluster.s3_endpoint`` is set), ``HF_HOME`` on the cache volume;
- ``MEDBENCH_SIZING`` for models sized from their weights: the sizing's facts as JSON (parameters,
  dtype, where the figures came from, GPUs, memory), for the runner to record in the manifest;
- credentials only by ``secretKeyRef``, and only those the model needs.

Resources come from ``launcher.k8s.sizing`` (``RenderOptions.sizes``, computed by the command
before rendering, since looking weights up is I/O). The run's storage URL and S3 endpoint are
annotations too, so ``launcher status RUN`` can find the run from its Jobs alone.

Exit codes: 0 complete, 1 failed (retried up to ``backoff_limit``), 2 bad input (the Job fails at
once: retrying cannot fix it).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from runner.config import ClusterConfig, Placement, descriptor
from runner.plan import ModelTask, Plan
from runner.storage import scheme_of

from .names import job_name, label_value
from .placement import merged_placement
from .sizing import JobSize, size_plan

CONTAINER = "runner"
HF_HOME = "/cache/huggingface"
CACHE_MOUNT = "/cache"
RUN_AS = 10001  # the image's non-root user (images/Dockerfile)
EXIT_BAD_INPUT = 2

LABEL_RUN = "medbench.io/run"
LABEL_MODEL = "medbench.io/model"
ANN_RUN_ID = "medbench.io/run-id"
ANN_MODEL_DIR = "medbench.io/model-dir"
ANN_MODEL_ID = "medbench.io/model-id"
ANN_SPEC_HASH = "medbench.io/spec-hash"
ANN_OUTPUT = "medbench.io/output"
#: The store's endpoint (any scheme's; the name is older than schemes other than s3://).
ANN_ENDPOINT = "medbench.io/s3-endpoint"
ANN_SIZING = "medbench.io/sizing"
ENV_SIZING = "MEDBENCH_SIZING"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"

# A backend's own Secrets are named by its descriptor (runner.config.backends); the storage's,
# by its scheme (runner.storage.schemes).


@dataclass(frozen=True)
class RenderOptions:
    """What ``submit`` knows beyond the plan.

    ``output_pvc``: when the output is a local folder on a shared filesystem, the
    PersistentVolumeClaim that holds it; it is mounted at the same absolute path in each pod.
    ``sizes``: each model's Job size by model folder (``launcher.k8s.sizing.size_plan``); left
    out, models are sized from their ids alone.
    """

    output_pvc: str | None = None
    output_path: str | None = None
    sizes: Mapping[str, JobSize] | None = None


def selector(run_id: str) -> str:
    """The label selector of every Job and pod of a run."""
    return f"{LABEL_RUN}={label_value(run_id)}"


def model_selector(run_id: str, model_dir: str) -> str:
    return f"{selector(run_id)},{LABEL_MODEL}={label_value(model_dir)}"


def spec_hash(manifest: dict[str, Any]) -> str:
    """A hash of everything we send, except the hash annotation itself."""
    m = json.loads(json.dumps(manifest))
    m.get("metadata", {}).get("annotations", {}).pop(ANN_SPEC_HASH, None)
    blob = json.dumps(m, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def render_jobs(plan: Plan, options: RenderOptions | None = None) -> list[dict[str, Any]]:
    """One Job manifest per model of the plan, in the order of the config."""
    options = options or RenderOptions()
    sizes = options.sizes if options.sizes is not None else size_plan(plan, lookup=False)
    return [render_job(plan, task, options, sizes[task.model_dir]) for task in plan.tasks]


def render_job(plan: Plan, task: ModelTask, options: RenderOptions, size: JobSize) -> dict[str, Any]:
    cluster = plan.config.cluster
    spec = task.spec
    labels = _labels(plan.run_id, task.model_dir)
    placement = merged_placement(cluster, spec.placement)
    job_labels = dict(labels)
    if placement.queue:
        job_labels[QUEUE_LABEL] = placement.queue

    # Scalars first, the pod template last: the order a person reads the rendered YAML in.
    job_spec: dict[str, Any] = {}
    if spec.shards > 1:
        job_spec.update(
            completionMode="Indexed",
            completions=spec.shards,
            parallelism=spec.shards,
            backoffLimitPerIndex=cluster.backoff_limit,
        )
    else:
        job_spec["backoffLimit"] = cluster.backoff_limit
    if cluster.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = cluster.active_deadline_seconds
    if cluster.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = cluster.ttl_seconds_after_finished
    job_spec["podFailurePolicy"] = {
        "rules": [
            # Bad input: every retry would fail the same way.
            {"action": "FailJob",
             "onExitCodes": {"containerName": CONTAINER, "operator": "In", "values": [EXIT_BAD_INPUT]}},
            # Preemption, eviction, node drain: not the model's fault, so no retry is spent.
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        ]
    }
    job_spec["template"] = {
        "metadata": {"labels": labels},
        "spec": _pod_spec(plan, task, cluster, placement, options, size),
    }
    annotations = {ANN_RUN_ID: plan.run_id, ANN_MODEL_DIR: task.model_dir, ANN_MODEL_ID: spec.id,
                   ANN_OUTPUT: output_of(plan, options)}
    endpoint = scheme_of(plan.config.output).endpoint(cluster)
    if endpoint:
        annotations[ANN_ENDPOINT] = endpoint
    if size.sized:
        annotations[ANN_SIZING] = size.facts_json()

    manifest: dict[str, Any] = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(plan.run_id, task.model_dir),
            "namespace": cluster.namespace,
            "labels": job_labels,
            "annotations": annotations,
        },
        "spec": job_spec,
    }
    manifest["metadata"]["annotations"][ANN_SPEC_HASH] = spec_hash(manifest)
    return manifest


def _labels(run_id: str, model_dir: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "medbench",
        "app.kubernetes.io/component": "runner",
        "app.kubernetes.io/part-of": "medbench",
        "app.kubernetes.io/managed-by": "medbench-launcher",
        "app.kubernetes.io/instance": label_value(run_id),
        LABEL_RUN: label_value(run_id),
        LABEL_MODEL: label_value(model_dir),
    }


def output_of(plan: Plan, options: RenderOptions) -> str:
    """The storage URL the pods write to (the shared folder's path with --shared-output-pvc)."""
    return options.output_path or plan.config.output


def uses_gpu_image(task: ModelTask, size: JobSize) -> bool:
    return descriptor(task.spec.backend).image == "gpu" or size.gpus > 0


def _pod_spec(plan: Plan, task: ModelTask, cluster: ClusterConfig, placement: Placement,
              options: RenderOptions, size: JobSize) -> dict[str, Any]:
    gpu_image = uses_gpu_image(task, size)
    image = cluster.image if gpu_image else (cluster.cpu_image or cluster.image)
    # /tmp on a volume of its own: the runner keeps its log there, and the root filesystem of the
    # API pods is read-only (the GPU image's libraries write caches under HOME that no test here
    # can see on a GPU, so that root stays writable).
    mounts: list[dict[str, Any]] = [{"name": "cache", "mountPath": CACHE_MOUNT},
                                    {"name": "tmp", "mountPath": "/tmp"}]
    if gpu_image and cluster.hf_cache_pvc:
        volumes: list[dict[str, Any]] = [
            {"name": "cache", "persistentVolumeClaim": {"claimName": cluster.hf_cache_pvc}}]
    else:
        # API models cache nothing worth keeping; a scratch dir keeps HF_HOME writable anyway.
        volumes = [{"name": "cache", "emptyDir": {}}]
    volumes.append({"name": "tmp", "emptyDir": {}})
    if size.gpus > 0:
        # NCCL and torch DataLoader workers use shared memory; the container default is 64 MiB. An
        # in-memory emptyDir counts against the memory limit, which sizing allowed for.
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": size.shm or "1Gi"}})
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    if options.output_pvc and options.output_path:
        volumes.append({"name": "output", "persistentVolumeClaim": {"claimName": options.output_pvc}})
        mounts.append({"name": "output", "mountPath": options.output_path})

    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": image,
        "imagePullPolicy": cluster.image_pull_policy,
        "command": ["runner"],
        "env": _env(plan, task, cluster, options, size),
        "resources": _resources(size),
        "volumeMounts": mounts,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
            "readOnlyRootFilesystem": not gpu_image,
        },
    }
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": cluster.service_account,
        # The runner never calls the Kubernetes API; a token in the pod would only be a liability.
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }
    if cluster.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": n} for n in cluster.image_pull_secrets]
    if placement.node_selector:
        pod["nodeSelector"] = dict(placement.node_selector)
    if placement.tolerations:
        pod["tolerations"] = [_toleration(t.model_dump(exclude_none=True)) for t in placement.tolerations]
    if placement.affinity:
        pod["affinity"] = placement.affinity
    if placement.priority_class:
        pod["priorityClassName"] = placement.priority_class
    return pod


def _toleration(t: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in t.items() if k != "toleration_seconds"}
    if "toleration_seconds" in t:
        out["tolerationSeconds"] = t["toleration_seconds"]
    return out


def _resources(size: JobSize) -> dict[str, Any]:
    cpu, memory, gpus = size.cpu, size.memory, size.gpus
    requests: dict[str, Any] = {}
    if cpu:
        requests["cpu"] = cpu
    if memory:
        requests["memory"] = memory
    if gpus > 0:
        # Guaranteed QoS: a GPU node is expensive, and an evicted 27B model loses its load time.
        requests["nvidia.com/gpu"] = str(gpus)
        return {"requests": requests, "limits": dict(requests)}
    # No CPU limit for API pods (throttling only slows them); memory limited so a leak is contained.
    limits = {"memory": memory} if memory else {}
    out: dict[str, Any] = {"requests": requests}
    if limits:
        out["limits"] = limits
    return out


def _secret_env(env: str, secret: str, key: str, optional: bool) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": secret, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": env, "valueFrom": {"secretKeyRef": ref}}


def _env(plan: Plan, task: ModelTask, cluster: ClusterConfig, options: RenderOptions,
         size: JobSize) -> list[dict[str, Any]]:
    spec = task.spec
    output = output_of(plan, options)
    env: list[dict[str, Any]] = [
        {"name": "MEDBENCH_OUTPUT", "value": output},
        {"name": "MEDBENCH_RUN_ID", "value": plan.run_id},
        {"name": "MEDBENCH_MODEL", "value": task.model_dir},
        {"name": "HF_HOME", "value": HF_HOME},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    if spec.shards > 1:
        env.append({"name": "MEDBENCH_SHARDS", "value": str(spec.shards)})
    if size.sized:
        env.append({"name": ENV_SIZING, "value": size.facts_json()})
    names = cluster.secrets
    for need in descriptor(spec.backend).secrets:
        env.append(_secret_env(need.env_name(spec), names.name(need.secret), need.key, need.optional))
    access = scheme_of(plan.config.output).pod_access(cluster)
    env += [{"name": name, "value": value} for name, value in access.env]
    env += [_secret_env(s.env, s.secret, s.key, s.optional) for s in access.secrets]
    return env
