"""Find a run by its id alone: where its results are stored, and where its Jobs are.

In order, the first that knows wins:

1. ``--from`` (and ``--endpoint``): the user said where;
2. the local index of runs submitted or run from this machine (``launcher.runindex``);
3. ``$MEDBENCH_OUTPUT``, else ``./results``, when the run is there (a local ``launcher run``);
4. the run's Jobs in the cluster (current kubeconfig context, or ``-n``/``--context``), whose
   annotations carry the storage URL and S3 endpoint (``launcher.k8s.render``);
5. else the default place, whose reader then says the run is not there and to check ``--from``.

Explicit ``-n``/``--context``/``--kubeconfig`` always win over what the index remembers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from launcher import runindex
from runner.errors import ClusterError, StorageError
from runner.storage import check_url, open_storage

DEFAULT_OUTPUT = "results"


@dataclass(frozen=True)
class RunLocation:
    run_id: str
    output: str
    endpoint: str | None = None
    namespace: str | None = None
    context: str | None = None
    kubeconfig: str | None = None
    found_by: str = ""
    #: the run was submitted to a cluster: its Jobs are worth asking about
    submitted: bool = False


def default_output() -> str:
    return os.environ.get("MEDBENCH_OUTPUT") or DEFAULT_OUTPUT


def _stored_at(output: str, endpoint: str | None, run_id: str) -> bool:
    try:
        return open_storage(output, endpoint_url=endpoint).exists(f"{run_id}/run.json")
    except StorageError:
        return False


def cluster_args(run_id: str, namespace: str | None, context: str | None,
                 kubeconfig: str | None) -> tuple[str | None, str | None, str | None]:
    """The namespace, context and kubeconfig for the run's Jobs: the flags, else what the index
    remembers from its submit."""
    entry = runindex.lookup(run_id)
    if entry is None:
        return namespace, context, kubeconfig
    if context is None and kubeconfig is None:
        context, kubeconfig = entry.context, entry.kubeconfig
    return namespace or entry.namespace, context, kubeconfig


def _from_jobs(run_id: str, namespace: str | None, context: str | None,
               kubeconfig: str | None) -> RunLocation | None:
    from launcher.k8s.client import Cluster
    from launcher.k8s.render import ANN_ENDPOINT, ANN_OUTPUT

    try:
        cluster = Cluster(namespace, kubeconfig=kubeconfig, context=context)
        jobs = cluster.list_jobs(run_id)
    except ClusterError:
        return None  # no cluster configured, or it does not answer: the run is simply not found there
    for job in jobs:
        ann = job["metadata"].get("annotations") or {}
        if ann.get(ANN_OUTPUT):
            return RunLocation(run_id, ann[ANN_OUTPUT], ann.get(ANN_ENDPOINT), cluster.namespace,
                               context, kubeconfig, found_by=f"its Jobs in namespace {cluster.namespace}",
                               submitted=True)
    return None


def locate(run_id: str, *, source: str | None = None, endpoint: str | None = None,
           namespace: str | None = None, context: str | None = None, kubeconfig: str | None = None,
           ask_cluster: bool = True) -> RunLocation:
    entry = runindex.lookup(run_id)
    ns, ctx, kc = cluster_args(run_id, namespace, context, kubeconfig)
    if source is not None:  # --from "" is refused, not ignored
        check_url(source, "--from")
        return RunLocation(run_id, source, endpoint, ns, ctx, kc, found_by="--from",
                           submitted=entry is not None and entry.submitted)
    if entry is not None:
        return RunLocation(run_id, entry.output, endpoint or entry.endpoint, ns, ctx, kc,
                           found_by=f"the index of runs started here ({runindex.index_path()})",
                           submitted=entry.submitted)
    local = default_output()
    if _stored_at(local, endpoint, run_id):
        return RunLocation(run_id, local, endpoint, namespace, context, kubeconfig, found_by=local)
    if ask_cluster:
        found = _from_jobs(run_id, namespace, context, kubeconfig)
        if found is not None:
            return RunLocation(run_id, found.output, endpoint or found.endpoint, found.namespace, context,
                               kubeconfig, found_by=found.found_by, submitted=True)
    # Found nowhere: the default place, whose reader says the run is not there and what to check.
    return RunLocation(run_id, local, endpoint, namespace, context, kubeconfig, found_by="default")
