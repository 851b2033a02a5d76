"""Before ``submit`` creates anything: is the cluster ready for these Jobs?

Checked through the API, one line per problem, all of them before anything is staged or created:

- the namespace exists;
- the pods' ServiceAccount, the Hugging Face cache PVC and the shared-output PVC exist;
- every Secret a Job reads by ``secretKeyRef`` exists and holds the key it reads (an optional one
  is a problem only where it is needed: the HF token of a gated model, the storage's keys where
  its scheme says so, as S3's at a MinIO or Ceph endpoint, where no workload identity stands in
  for them);
- the image pull Secrets exist;
- the store (a remote one) answers to the launcher's credentials.

What our role may not read (the medbench-launcher Role of k8s/rbac.yaml grants no Secrets, PVCs
or ServiceAccounts, by design) is reported as not checked, not as a problem: the Job's pods then
say it themselves (``CreateContainerConfigError`` in ``launcher status``). ``submit --force``
skips all of this.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from runner.config import RunConfig, descriptor
from runner.errors import ClusterError, StorageError
from runner.storage import Storage, scheme_of

from .client import Cluster, NotAllowed
from .render import ANN_MODEL_ID
from .sizing import JobSize

#: The key each Secret of the image pull kind holds.
DOCKER_KEYS = (".dockerconfigjson", ".dockercfg")


class PreflightError(ClusterError):
    """The cluster is not ready for these Jobs; the message has one line per problem."""


@dataclass
class SecretUse:
    """How the Jobs use one Secret: the keys they read, and for what."""

    keys: dict[str, dict[str, list[str]]] = field(default_factory=dict)  #: key -> env -> models
    required_keys: set[str] = field(default_factory=set)

    def readers(self, keys: Iterable[str]) -> str:
        """``OPENAI_API_KEY for gpt-4o, gpt-4o-mini``, for the keys given."""
        by_env: dict[str, list[str]] = {}
        for k in sorted(keys):
            for env, models in self.keys.get(k, {}).items():
                by_env.setdefault(env, []).extend(m for m in models if m not in by_env.get(env, []))
        return "; ".join(f"{env} for {', '.join(models)}" for env, models in by_env.items())


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    not_checked: list[str] = field(default_factory=list)


def secret_uses(jobs: Iterable[dict]) -> dict[str, SecretUse]:
    """Every Secret the Jobs reference by secretKeyRef, read from the manifests themselves."""
    uses: dict[str, SecretUse] = {}
    for job in jobs:
        model = job["metadata"]["annotations"].get(ANN_MODEL_ID, job["metadata"]["name"])
        for c in job["spec"]["template"]["spec"]["containers"]:
            for env in c.get("env") or []:
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if not ref:
                    continue
                use = uses.setdefault(ref["name"], SecretUse())
                use.keys.setdefault(ref["key"], {}).setdefault(env["name"], []).append(model)
                if not ref.get("optional"):
                    use.required_keys.add(ref["key"])
    return uses


def _needed_optional(cfg: RunConfig, sizes: dict[str, JobSize]) -> dict[tuple[str, str], str]:
    """Optional Secret keys that these Jobs do need after all, with the reason."""
    need: dict[tuple[str, str], str] = {}
    names = cfg.cluster.secrets
    gated: dict[tuple[str, str], list[str]] = {}
    for m in cfg.models:
        if sizes.get(m.model_dir) and sizes[m.model_dir].gated:
            for secret in descriptor(m.backend).secrets:
                if secret.when_gated:
                    gated.setdefault((names.name(secret.secret), secret.key), []).append(m.id)
    for where, models in gated.items():
        need[where] = f"{', '.join(models)} {'is' if len(models) == 1 else 'are'} gated"
    for key in scheme_of(cfg.output).pod_access(cfg.cluster).secrets:
        if key.needed:
            need[(key.secret, key.key)] = key.needed
    return need


def _create_hint(ns: str, name: str, keys: Iterable[str]) -> str:
    literals = " ".join(f"--from-literal={k}=..." for k in sorted(keys))
    return f"kubectl -n {ns} create secret generic {name} {literals}"


def check(cluster: Cluster, cfg: RunConfig, jobs: list[dict], sizes: dict[str, JobSize], *,
          output_pvc: str | None = None, storage: Storage | None = None, run_id: str = "") -> Report:
    """Every problem these Jobs would meet in the cluster, and what could not be checked."""
    report = Report()
    ns = cluster.namespace
    try:
        if not cluster.namespace_exists():
            report.problems.append(f"namespace '{ns}' does not exist; create it with `kubectl apply -k k8s/` "
                                   "or pass --namespace")
            return report  # everything else would only repeat it
    except NotAllowed:
        pass  # most users may not read namespaces; the server's dry run of each Job still catches it

    def exists(kind: str, name: str, what: str, fix: str) -> None:
        try:
            if not cluster.exists(kind, name):
                report.problems.append(f"{kind} {name} ({what}) does not exist in namespace '{ns}': {fix}")
        except NotAllowed:
            report.not_checked.append(f"{kind}s")

    cl = cfg.cluster
    exists("ServiceAccount", cl.service_account, "cluster.service_account, the pods' identity",
           "`kubectl apply -k k8s/` creates medbench-runner")
    pod_pvcs = {v["persistentVolumeClaim"]["claimName"] for job in jobs
                for v in job["spec"]["template"]["spec"]["volumes"] if "persistentVolumeClaim" in v}
    if cl.hf_cache_pvc and cl.hf_cache_pvc in pod_pvcs:
        exists("PersistentVolumeClaim", cl.hf_cache_pvc, "cluster.hf_cache_pvc, the Hugging Face cache",
               "`kubectl apply -k k8s/` creates medbench-hf-cache; hf_cache_pvc: null uses a scratch cache")
    if output_pvc:
        exists("PersistentVolumeClaim", output_pvc, "--shared-output-pvc", "create it, or pass another")

    if _check_secrets(cluster, cfg, jobs, sizes, report):
        _check_pull_secrets(cluster, cfg, report)
    if storage is not None:
        try:
            storage.list(f"{run_id}/")
        except StorageError as e:
            report.problems.append(f"output {cfg.output}: {e}")
    report.not_checked = list(dict.fromkeys(report.not_checked))
    return report


def _check_secrets(cluster: Cluster, cfg: RunConfig, jobs: list[dict], sizes: dict[str, JobSize],
                   report: Report) -> bool:
    """Each referenced Secret and key; False when our role may not read Secrets at all."""
    ns = cluster.namespace
    optional_needed = _needed_optional(cfg, sizes)
    for name, use in sorted(secret_uses(jobs).items()):
        try:
            keys = cluster.secret_keys(name)
        except NotAllowed:
            report.not_checked.append("Secrets")
            return False
        needed = {k for (s, k) in optional_needed if s == name and k in use.keys}
        required = use.required_keys | needed
        if not required:
            continue
        why = "; ".join(dict.fromkeys(optional_needed[(name, k)] for k in sorted(needed - use.required_keys)))
        because = f" ({why})" if why else ""
        if keys is None:
            report.problems.append(f"Secret {name} does not exist in namespace '{ns}' "
                                   f"({use.readers(required)}){because}: {_create_hint(ns, name, use.keys)}")
            continue
        for key in sorted(required - keys):
            has = ", ".join(sorted(keys)) or "no keys"
            report.problems.append(f"Secret {name} has no key '{key}' ({use.readers([key])}){because}; "
                                   f"it holds: {has}")
    return True


def _check_pull_secrets(cluster: Cluster, cfg: RunConfig, report: Report) -> None:
    ns = cluster.namespace
    for name in cfg.cluster.image_pull_secrets:
        try:
            keys = cluster.secret_keys(name)
        except NotAllowed:
            report.not_checked.append("Secrets")
            return
        if keys is None:
            report.problems.append(f"image pull Secret {name} (cluster.image_pull_secrets) does not exist in "
                                   f"namespace '{ns}': kubectl -n {ns} create secret docker-registry {name} "
                                   "--docker-server=... --docker-username=... --docker-password=...")
        elif not keys & set(DOCKER_KEYS):
            report.problems.append(f"image pull Secret {name} holds no {DOCKER_KEYS[0]}; create it with "
                                   "`kubectl create secret docker-registry`")
