"""``launcher render | submit | logs | cancel``: a run as Kubernetes Jobs, one per model.

``status`` lives in ``launcher.commands.status`` (it also reads progress from storage) and calls
``launcher.k8s.client.job_states``. ``submit`` sizes every Job from its model
(``launcher.k8s.sizing``), checks the cluster is ready for them (``launcher.k8s.preflight``),
stages, creates, and remembers where the run went (``launcher.runindex``), so ``status``,
``logs``, ``collect`` and ``cancel`` need only the run id.

Text that did not come from our own code (model ids, server messages, pod names) is printed as
``rich.text.Text``, never as markup.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import yaml
from rich.console import Console
from rich.text import Text

from runner.config import RunConfig, load_config
from runner.config.base import check_dns_label, check_object_name
from runner.errors import InputError
from runner.plan import Plan
from runner.storage import SCHEMES, scheme_of

if TYPE_CHECKING:
    from launcher.k8s.sizing import JobSize

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def add_cluster_args(p, *, namespace_help: str = "namespace (default: the kubeconfig context's, "
                     "else medbench)") -> None:
    """--namespace, --context and --kubeconfig, shared by every command that calls the cluster."""
    p.add_argument("-n", "--namespace", metavar="NS", help=namespace_help)
    p.add_argument("--context", metavar="NAME", help="kubeconfig context (default: the current one)")
    p.add_argument("--kubeconfig", metavar="FILE",
                   help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or the pod's account)")


def register(sub) -> None:
    p = sub.add_parser("render", help="print the Kubernetes Jobs a submit would create, touching nothing")
    p.add_argument("config", help="models.yaml")
    p.add_argument("-o", "--out-dir", metavar="DIR", help="write one YAML file per Job into DIR")
    p.add_argument("-n", "--namespace", metavar="NS", help="override cluster.namespace")
    _add_shared_output(p)
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("submit", help="stage the run in object storage and create one Job per model")
    p.add_argument("config", help="models.yaml")
    p.add_argument("--dry-run", action="store_true",
                   help="server-side dry run: the API server validates every Job, and the plan (resources, "
                        "tokens, GPU-hours, cost) is printed; nothing is staged or created")
    p.add_argument("--force", action="store_true",
                   help="skip the preflight checks (namespace, Secrets, PVCs, image pull Secrets, bucket)")
    add_cluster_args(p, namespace_help="override cluster.namespace")
    _add_shared_output(p)
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("logs", help="print the runner's log from the pods of one model")
    p.add_argument("run", help="run id (printed by submit)")
    p.add_argument("model", help="model folder name or id")
    p.add_argument("--tail", type=int, metavar="N", help="only the last N lines of each pod")
    p.add_argument("--shard", type=int, metavar="I", help="only shard I of a sharded model")
    add_cluster_args(p)
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser("cancel", help="delete every Job of a run (answers already stored are kept)")
    p.add_argument("run", help="run id")
    add_cluster_args(p)
    p.set_defaults(func=cmd_cancel)


def _add_shared_output(p) -> None:
    p.add_argument(
        "--shared-output-pvc", metavar="PVC",
        help="the config's output is a local folder on a shared filesystem that this PersistentVolumeClaim "
             "holds; it is mounted at the same absolute path in every pod",
    )


# --- render --------------------------------------------------------------------------------------


def _render(args) -> tuple[RunConfig, Plan, list[dict], dict[str, JobSize]]:
    from launcher.k8s.render import RenderOptions, render_jobs
    from launcher.k8s.sizing import size_plan
    from runner.plan import make_plan

    cfg = load_config(args.config)
    if args.namespace:
        try:
            cfg.cluster.namespace = check_dns_label(args.namespace)
        except ValueError as e:
            raise InputError(f"--namespace {args.namespace!r}: {e}") from None
    plan = make_plan(cfg)
    sizes = size_plan(plan)
    options = RenderOptions(sizes=sizes)
    if not scheme_of(cfg.output).remote and args.shared_output_pvc:
        try:
            check_object_name(args.shared_output_pvc)
        except ValueError as e:
            raise InputError(f"--shared-output-pvc {args.shared_output_pvc!r}: {e}") from None
        options = RenderOptions(output_pvc=args.shared_output_pvc,
                                output_path=str(Path(cfg.output).resolve()), sizes=sizes)
    return cfg, plan, render_jobs(plan, options), sizes


def _local_output_message(cfg: RunConfig, source: str) -> str:
    remote = " or ".join(s.example for s in SCHEMES.values() if s.remote)
    return (f"{source}: output: '{cfg.output}' is a local folder, which pods in the cluster cannot see; "
            f"use {remote}, or pass --shared-output-pvc PVC if the folder is on a shared "
            "filesystem held by that PersistentVolumeClaim")


def cmd_render(args) -> int:
    from launcher.commands.plan import print_sizes

    cfg, plan, jobs, sizes = _render(args)
    if not scheme_of(cfg.output).remote and not args.shared_output_pvc:
        err_console.print(Text("warning: ", style="yellow") + Text(_local_output_message(cfg, args.config)))
    print_sizes(plan, sizes, all_lines=True)
    if args.out_dir:
        out = Path(args.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for job in jobs:
            path = out / f"{job['metadata']['name']}.yaml"
            path.write_text(yaml.safe_dump(job, sort_keys=False), encoding="utf-8")
            console.print(str(path), markup=False)
        return 0
    sys.stdout.write(yaml.safe_dump_all(jobs, sort_keys=False))
    return 0


# --- submit --------------------------------------------------------------------------------------


def cmd_submit(args) -> int:
    from launcher.commands.plan import print_sizes
    from launcher.k8s.client import Cluster
    from launcher.k8s.preflight import PreflightError, check
    from runner.artefacts.stored import stage_run
    from runner.storage import open_storage

    # Everything that can be checked without the cluster, first: nothing is staged on bad input.
    cfg, plan, jobs, sizes = _render(args)
    scheme = scheme_of(cfg.output)
    endpoint = scheme.endpoint(cfg.cluster)
    if not scheme.remote and not args.shared_output_pvc:
        raise InputError(_local_output_message(cfg, args.config))
    print_sizes(plan, sizes, all_lines=False)

    # Then the cluster, before anything is staged: a dead API server leaves storage untouched.
    cluster = Cluster(cfg.cluster.namespace, kubeconfig=args.kubeconfig, context=args.context)
    cluster.check_reachable()
    ns = cluster.namespace
    storage = open_storage(cfg.output, endpoint_url=endpoint)
    if not args.force:
        # A remote store is asked whether it answers; a shared folder's PVC, whether it exists.
        remote = scheme.remote
        report = check(cluster, cfg, jobs, sizes, output_pvc=None if remote else args.shared_output_pvc,
                       storage=storage if remote else None, run_id=plan.run_id)
        if report.not_checked:
            err_console.print(Text(f"preflight: not checked, your role may not read them: "
                                   f"{', '.join(report.not_checked)}", style="dim"))
        if report.problems:
            raise PreflightError("\n".join([
                f"the cluster is not ready for run {plan.run_id} in namespace '{ns}'; nothing was staged or "
                "created (submit --force skips these checks):", *report.problems]))
    states = {job["metadata"]["name"]: cluster.check_job(job) for job in jobs}
    new = [job for job in jobs if states[job["metadata"]["name"]] == "new"]
    # The API server's admission (quota, pod security, webhooks) judges every new Job before we stage.
    for job in new:
        cluster.create_job(job, dry_run=True)

    if args.dry_run:
        console.print(Text(f"dry run: the API server accepted {len(new)} new Job(s) for run {plan.run_id} "
                           f"in namespace {ns}; {len(jobs) - len(new)} already exist; nothing was staged or "
                           "created"))
        _print_jobs(jobs, {n: ("would create" if s == "new" else "exists") for n, s in states.items()})
        from launcher.commands.plan import print_plan
        from launcher.estimate import estimate

        print_plan(estimate(plan, sizes), console)
        return 0

    if new:
        stage_run(plan, storage)
    results = {job["metadata"]["name"]: cluster.create_job(job) for job in jobs}
    created = sum(1 for r in results.values() if r == "created")
    where = cfg.output if scheme.remote else str(Path(cfg.output).resolve())
    console.print(Text(f"run {plan.run_id}: {len(jobs)} Job(s) in namespace {ns} ({created} created, "
                       f"{len(jobs) - created} already there); results go to "
                       f"{where.rstrip('/')}/{plan.run_id}"))
    _print_jobs(jobs, results)
    remembered = _remember(args, plan.run_id, where, endpoint, ns)
    flags = "" if remembered else _flags(args, ns)
    source = "" if remembered else f" --from {where}" + (f" --endpoint {endpoint}" if endpoint else "")
    enough = " (the run id is enough: this machine remembers where it went)" if remembered else ""
    console.print(Text(f"next:{enough}"))
    for line in (f"launcher status {plan.run_id}{source}{flags} --watch",
                 f"launcher logs {plan.run_id} MODEL{flags}",
                 f"launcher collect {plan.run_id}{source} --dest results",
                 f"launcher cancel {plan.run_id}{flags}"):
        console.print(Text(f"  {line}"))
    return 0


def _remember(args, run_id: str, where: str, endpoint: str | None, ns: str) -> bool:
    """Record the run in the local index; a cache that cannot be written costs only a warning."""
    from launcher import runindex

    entry = runindex.RunEntry(
        run_id=run_id, output=where, endpoint=endpoint, namespace=ns, context=args.context,
        kubeconfig=str(Path(args.kubeconfig).resolve()) if args.kubeconfig else None,
        config=str(Path(args.config).resolve()))
    try:
        runindex.record(entry)
    except OSError as e:
        err_console.print(Text("warning: ", style="yellow") + Text(
            f"could not remember run {run_id} in {runindex.index_path()} ({e}); pass --from and -n to "
            "the commands below"))
        return False
    return True


def _flags(args, ns: str) -> str:
    out = ""
    if ns != "medbench":
        out += f" -n {ns}"
    if getattr(args, "context", None):
        out += f" --context {args.context}"
    if getattr(args, "kubeconfig", None):
        out += f" --kubeconfig {args.kubeconfig}"
    return out


def _print_jobs(jobs: list[dict], states: dict[str, str]) -> None:
    from launcher.k8s.render import ANN_MODEL_DIR

    for job in jobs:
        name = job["metadata"]["name"]
        model_dir = job["metadata"]["annotations"][ANN_MODEL_DIR]
        console.print(Text(f"  {model_dir:<40} job/{name}  {states[name]}"))


# --- logs and cancel -----------------------------------------------------------------------------


def _cluster(args):
    """The cluster holding the run's Jobs: the flags, else where the run was submitted from here."""
    from launcher.k8s.client import Cluster
    from launcher.locate import cluster_args

    ns, context, kubeconfig = cluster_args(args.run, args.namespace, args.context, args.kubeconfig)
    return Cluster(ns, kubeconfig=kubeconfig, context=context)


def cmd_logs(args) -> int:
    cluster = _cluster(args)
    model_dir = args.model.replace("/", "_")
    found = cluster.pod_logs(args.run, model_dir, tail=args.tail, shard=args.shard)
    if not found:
        known = sorted(i.model_dir for i in cluster.run_jobs(args.run))
        hint = f"; models of this run: {', '.join(known)}" if known else \
            f"; no Jobs of run {args.run} in namespace {cluster.namespace} either"
        raise InputError(f"no pods for model '{model_dir}' of run {args.run}{hint}")
    for info, text in found:
        if len(found) > 1 or info.phase == "Pending":
            shard = f" shard {info.index}" if info.index is not None else ""
            why = f", {info.reason}" if info.reason else ""
            sys.stdout.write(f"==> pod {info.name}{shard} ({info.phase}{why}) <==\n")
        sys.stdout.write(text if not text or text.endswith("\n") else text + "\n")
    return 0


def cmd_cancel(args) -> int:
    cluster = _cluster(args)
    deleted = cluster.delete_run(args.run)
    if not deleted:
        raise InputError(f"no Jobs of run {args.run} in namespace {cluster.namespace} "
                         "(already finished and cleaned up, or another --namespace?)")
    for name in deleted:
        console.print(Text(f"deleted job/{name}"))
    console.print(Text(f"run {args.run}: {len(deleted)} Job(s) deleted; answers already stored are kept, and "
                       "submitting the same config again continues where it stopped"))
    return 0
