"""``launcher run models.yaml``: run every model locally, one after another."""

from __future__ import annotations

from runner.config import check_run_id, load_config
from runner.errors import InputError
from runner.storage import check_url, expected_outputs


def register(sub) -> None:
    p = sub.add_parser("run", help="run every model of a models.yaml locally (CPU or local GPU)")
    p.add_argument("config", help="models.yaml")
    p.add_argument("--only", action="append", metavar="NAME",
                   help="run only this model (id or folder name); repeatable. Only the named models "
                        "are checked (API keys, GPU, weights); the run id still covers the whole file")
    p.add_argument("--output", metavar="DIR", help=f"override the config's output: {expected_outputs()}")
    p.add_argument("--run-id", metavar="ID",
                   help="use this run id instead of the one derived from the config and questions")
    p.add_argument("--wait", action="store_true",
                   help="if another process is running these models of this run, wait for it to "
                        "finish instead of stopping (exit 1) at once")
    p.set_defaults(func=cmd_run)


def cmd_run(args) -> int:
    from launcher.local import run_local

    cfg = load_config(args.config)
    if args.output is not None:  # --output "" is refused, not ignored
        cfg.output = check_url(args.output, "--output")
    if args.run_id:
        try:
            check_run_id(args.run_id, "--run-id")
        except ValueError as e:
            raise InputError(str(e)) from None
    for name in args.only or []:
        cfg.model(name)  # unknown names fail before anything is written
    _plan, manifests = run_local(cfg, only=args.only, run_id=args.run_id, wait=args.wait)
    return 0 if all(m.status == "complete" for m in manifests) else 1
