"""``launcher collect RUN``: copy a run from storage into the local layout, in parallel.

``DEST/RUN/`` ends up exactly as a local ``launcher run`` leaves it (run.json,
questions.jsonl, ``<model_dir>/N.txt``, responses.jsonl, manifest.json...), so the original
tool's compare snippet, ``launcher report`` and a later local resume all work on it.

Idempotent: a file already present with the same size and content (the S3 ETag is the MD5 of
a single-part upload; multipart tags are recomputed from the part size) is skipped, so running
collect again fetches only what changed. Local files that are not in storage are never touched.
Each download is checked against the listing (the store's ``download_file``) before it replaces
anything. A model whose responses.jsonl is missing or disagrees with its records (two shards
that finished together, a pod killed at the very end) gets it rebuilt locally from its records,
unless the rebuilt file would hold fewer answers than storage does.

A key that cannot land as it is (outside DEST, a name too long for the disk, a file and a
folder by one name) is left out with one warning line; it never costs the run's own files.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from launcher.commands.status import add_source_arguments, check_run_id, source_url
from launcher.runstate import run_config
from runner.artefacts import jsonl
from runner.artefacts.keys import Keys, is_layout_file, record_index
from runner.artefacts.records import RunInfo
from runner.artefacts.stored import (
    derived_files_agree,
    finalize_model,
    load_staged_questions,
    read_run_info,
)
from runner.config import RunConfig
from runner.errors import InputError, StorageError, StorageURLError
from runner.plan import plan_from_run
from runner.storage import Storage, check_url, open_storage, scheme_of

DEFAULT_DEST = "results"
DEFAULT_WORKERS = 8

Inventory = dict[str, tuple[int, str | None]]


def register(sub) -> None:
    p = sub.add_parser("collect", help="download a run from storage into the local layout")
    p.add_argument("run", help="the run id")
    add_source_arguments(p)
    p.add_argument("--dest", metavar="DIR", default=DEFAULT_DEST,
                   help=f"local folder; the run lands in DIR/RUN (default ./{DEFAULT_DEST})")
    p.add_argument("--workers", type=int, default=DEFAULT_WORKERS, metavar="N",
                   help=f"parallel downloads (default {DEFAULT_WORKERS})")
    p.set_defaults(func=cmd_collect)


@dataclass
class CollectResult:
    dest: Path
    downloaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    bytes: int = 0
    assembled: list[str] = field(default_factory=list)  # models whose responses.jsonl we built
    incomplete: list[str] = field(default_factory=list)  # models with answers still missing
    left_out: list[tuple[str, str]] = field(default_factory=list)  # (key, why) of keys not collected
    not_rebuilt: list[tuple[str, str]] = field(default_factory=list)  # (model, why): derived files kept


def _name_limits(dest_root: Path) -> tuple[int, int]:
    """The longest file name and path, in bytes, the disk under ``dest_root`` takes."""
    probe = dest_root.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    limits = []
    for name, default in (("PC_NAME_MAX", 255), ("PC_PATH_MAX", 4096)):
        try:
            limits.append(os.pathconf(probe, name))
        except (OSError, ValueError, AttributeError):  # not POSIX, or not known for this disk
            limits.append(default)
    return limits[0], limits[1]


def _local_path(dest_root: Path, key: str, limits: tuple[int, int]) -> Path | str:
    """Where ``key`` lands under ``dest_root``, or why it cannot land there."""
    parts = [p for p in key.split("/") if p]
    if not parts or any(p in ("..", ".") for p in parts) or "\\" in key or "\x00" in key:
        return f"it has no safe place under {dest_root}"
    name_max, path_max = limits
    for part in parts:
        size = len(os.fsencode(part))
        if size > name_max:
            return f"a name in it is {size} bytes long; a file name on {dest_root} may have {name_max} bytes"
    local = dest_root.joinpath(*parts)
    size = len(os.fsencode(local.absolute()))
    if size >= path_max:
        return f"its path would be {size} bytes long; a path on {dest_root} may have {path_max - 1} bytes"
    return local


def _layout(dest_root: Path, items: Inventory, run_id: str,
            model_dirs: Collection[str]) -> tuple[dict[str, Path], list[tuple[str, str]]]:
    """Each key's local path, and the keys left out with why: those with no safe place under
    ``dest_root`` (``..``, a name too long for the disk), and the run's leases (who was running
    it, not results), silently.

    A store holds ``a`` and ``a/b`` side by side; a disk cannot hold a file and a folder by one
    name. The run's own layout decides which is good: a key the layout writes as a file (a
    record, an answer, a manifest) is kept and whatever lies below it left out; any other file
    in the way of a folder is left out, and the folder kept.
    """
    leases = Keys(run_id).leases
    limits = _name_limits(dest_root)
    paths: dict[str, Path] = {}
    left_out: list[tuple[str, str]] = []
    for key in items:
        if key.startswith(leases):
            continue
        local = _local_path(dest_root, key, limits)
        if isinstance(local, str):
            left_out.append((key, local))
        else:
            paths[key] = local
    owners = {local: key for key, local in paths.items() if is_layout_file(key, run_id, model_dirs)}
    for key, local in list(paths.items()):
        owner = next((owners[p] for p in local.parents if p in owners), None)
        if owner is not None:
            left_out.append((key, f"it lies below {owner!r}, a file of the run"))
            del paths[key]
    folders = {parent for local in paths.values() for parent in local.parents}
    for key, local in list(paths.items()):
        if local in folders:
            left_out.append((key, "a file where the run has a folder"))
            del paths[key]
    return paths, sorted(left_out)


def _check_destination(dest_root: Path, paths: list[Path]) -> None:
    """InputError (nothing downloaded yet) when local files stand where the run needs folders,
    or folders where it needs files."""
    if dest_root.exists() and not dest_root.is_dir():
        raise InputError(f"--dest {dest_root}: is a file; give a folder (the run lands in DEST/RUN)")
    checked: set[Path] = set()
    for local in paths:
        if local.is_dir():
            raise InputError(f"cannot collect into {dest_root}: {local} is a folder where the run has a "
                             "file; move it away and collect again")
        for parent in local.parents:
            if parent in checked or parent == dest_root:
                break
            checked.add(parent)
            if parent.exists() and not parent.is_dir():
                raise InputError(f"cannot collect into {dest_root}: {parent} is a file where the run "
                                 "has a folder; move it away and collect again")


def collect_run(source: Storage, run_id: str, dest_root: Path, *, workers: int = DEFAULT_WORKERS,
                on_file: Callable[[str, int], None] | None = None,
                on_start: Callable[[int, int], None] | None = None) -> CollectResult:
    """Bring ``run_id`` from ``source`` into ``dest_root/run_id``; see the module docstring."""
    info = read_run_info(source, run_id)  # InputError when there is no such run
    cfg = run_config(info, f"{source.url}/{Keys(run_id).run_json}")
    result = CollectResult(dest=dest_root / run_id)
    root = source.local_path("")
    same_place = root is not None and root.resolve() == dest_root.resolve()
    listed = {} if same_place else source.list_info(run_id)
    paths, result.left_out = _layout(dest_root, listed, run_id, {m.model_dir for m in cfg.models})
    _check_destination(dest_root, list(paths.values()))
    items = {k: v for k, v in listed.items() if k in paths}
    todo = []
    for key, (size, etag) in sorted(items.items()):
        local = paths[key]
        if source.matches_file(key, local, size, etag):
            result.skipped.append(key)
        else:
            todo.append((key, local, size, etag))
    if on_start:
        on_start(len(todo), sum(size for _k, _l, size, _e in todo))
    if todo:
        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="collect") as pool:
            futures = {pool.submit(source.download_file, key, local, size=size, etag=etag): (key, size)
                       for key, local, size, etag in todo}
            try:
                for fut in as_completed(futures):
                    fut.result()
                    key, size = futures[fut]
                    result.downloaded.append(key)
                    result.bytes += size
                    if on_file:
                        on_file(key, size)
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    result.downloaded.sort()
    target = source if same_place else open_storage(str(dest_root))
    present = set(target.list(run_id)) if same_place else set(items)
    stored = present if same_place else set(listed)
    _assemble_missing_responses(target, present, stored, run_id, info, cfg, result)
    return result


def _responses_indices(storage: Storage, key: str) -> set[int]:
    """The question indices a responses.jsonl holds (lines cut short are skipped)."""
    try:
        text = storage.read_text(key)
    except (StorageError, UnicodeDecodeError):
        return set()
    return {obj["index"] for _, obj in jsonl.parse(text, skip_bad=True)
            if isinstance(obj, dict) and isinstance(obj.get("index"), int)}


def _record_indices(keys: Keys, listing: set[str]) -> set[int]:
    return {i for k in listing if k.startswith(keys.records) and (i := record_index(k)) is not None}


def _assemble_missing_responses(local: Storage, present: set[str], stored: set[str], run_id: str,
                                info: RunInfo, cfg: RunConfig, result: CollectResult) -> None:
    """Rebuild each model's derived files in ``local`` where they are missing or disagree with
    its records (two shards that finished together, a pod killed at the very end).

    ``present`` is what was collected, ``stored`` what storage holds. A rebuild that would hold
    fewer answers than storage (a record that could not be collected, or a responses.jsonl that
    is the last copy of an answer whose record is gone) is not made: what was collected stays.
    """
    plan = None
    for model in cfg.models:
        spec_dir = model.model_dir
        keys = Keys(run_id, spec_dir)
        records = _record_indices(keys, present)
        if not records:
            continue
        responses = _responses_indices(local, keys.responses) if keys.responses in present else set()
        if keys.responses in present and responses == records:
            if model.shards == 1:
                continue
            # Sharded: the merged manifest may still be stale (it said "running" while the
            # last shard finished).
            plan = plan or plan_from_run(info, load_staged_questions(local, run_id))
            if derived_files_agree(local, plan, plan.task(spec_dir)):
                continue
        if len(records) < info.n_questions:
            result.incomplete.append(spec_dir)
            if keys.responses not in present:
                continue
        lost = sorted((_record_indices(keys, stored) | responses) - records)
        if lost:
            shown = ", ".join(map(str, lost[:10])) + (" ..." if len(lost) > 10 else "")
            why = ("responses.jsonl kept as stored, not rebuilt from the records: it would lose "
                   if keys.responses in present else "responses.jsonl not assembled: it would lack ")
            result.not_rebuilt.append((spec_dir, f"{why}question(s) {shown}"))
            continue
        plan = plan or plan_from_run(info, load_staged_questions(local, run_id))
        finalize_model(local, plan, plan.task(spec_dir))
        result.assembled.append(spec_dir)


def check_dest(dest: str) -> Path:
    """``--dest``: a local folder (collect brings a run home; it never copies between stores)."""
    try:
        local = not scheme_of(dest).remote
    except StorageURLError:  # a scheme no store serves: not a folder either
        local = False
    if not local:
        raise InputError(f"--dest {dest!r}: collect downloads into a local folder; give a folder such as "
                         f"{DEFAULT_DEST}")
    return Path(check_url(dest, "--dest")).expanduser()


def cmd_collect(args) -> int:
    run_id = check_run_id(args.run)
    dest_root = check_dest(args.dest)
    source = open_storage(source_url(args), endpoint_url=args.endpoint)
    console = Console()
    columns = [TextColumn("collecting"), BarColumn(), DownloadColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=True) as progress:
        bar = progress.add_task("collect", total=None)

        def on_start(files: int, total_bytes: int) -> None:
            progress.update(bar, total=total_bytes)

        def on_file(key: str, size: int) -> None:
            progress.update(bar, advance=size)

        result = collect_run(source, run_id, dest_root, workers=args.workers,
                             on_file=on_file, on_start=on_start)
    # Run ids, model names and folders are the user's text: printed as written, never as markup.
    console.print(
        f"{run_id}: {len(result.downloaded)} file(s) downloaded ({_human(result.bytes)}), "
        f"{len(result.skipped)} unchanged, from {source.url} into {result.dest}",
        markup=False, highlight=False,
    )
    warn = Console(stderr=True, highlight=False, soft_wrap=True)
    for key, why in result.left_out:
        warn.print(Text(f"warning: left out {key!r}: {why}"))
    for name, why in result.not_rebuilt:
        warn.print(Text(f"warning: {name}: {why}"))
    for name in result.assembled:
        console.print(f"{name}: assembled responses.jsonl from its records", markup=False, highlight=False)
    for name in result.incomplete:
        console.print(Text.assemble((name, "yellow"), ": not finished yet (some answers missing); "
                                    "collect again when `launcher status` says complete"), highlight=False)
    console.print(f"next: launcher report {result.dest}", markup=False, highlight=False, soft_wrap=True)
    return 0


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"
