"""``launcher collect RUN``: copy a run from storage into the local layout, in parallel.

``DEST/RUN/`` ends up exactly as a local ``launcher run`` leaves it (run.json,
questions.jsonl, ``<model_dir>/N.txt``, responses.jsonl, manifest.json...), so the original
tool's compare snippet, ``launcher report`` and a later local resume all work on it.

Idempotent: a file already present with the same size and content (the S3 ETag is the MD5 of
a single-part upload; multipart tags are recomputed from the part size) is skipped, so running
collect again fetches only what changed. Local files that are not in storage are never touched.
A model whose responses.jsonl is missing or disagrees with its records (two shards that
finished together, a pod killed at the very end) gets it rebuilt locally from its records.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from launcher.commands.status import add_source_arguments, check_run_id, source_url
from launcher.runstate import run_config
from runner.artefacts import jsonl
from runner.artefacts.keys import Keys, record_index
from runner.artefacts.records import RunInfo
from runner.artefacts.stored import derived_files_agree, finalize_model, load_staged_questions, read_run_info
from runner.errors import InputError, StorageError
from runner.plan import plan_from_run
from runner.storage import LocalStorage, Storage, open_storage

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
    unsafe: list[str] = field(default_factory=list)  # keys with no safe place under dest: left out


def inventory(storage: Storage, prefix: str) -> Inventory:
    """Every key under ``prefix`` with its size and, where the store has one, its tag."""
    from runner.storage.s3 import S3Storage

    if isinstance(storage, S3Storage):
        return storage.list_info(prefix)  # one listing, no request per key
    if isinstance(storage, LocalStorage):
        return {k: ((storage.root / k).stat().st_size, None) for k in storage.list(prefix)}
    return {k: storage.size_and_etag(k) for k in storage.list(prefix)}


def multipart_etag(data: bytes, part_size: int) -> str:
    """S3's tag for a multipart upload: MD5 of the parts' MD5s, then ``-<parts>``."""
    parts = [data[i:i + part_size] for i in range(0, len(data), part_size)] or [b""]
    digests = b"".join(hashlib.md5(p).digest() for p in parts)
    return f"{hashlib.md5(digests).hexdigest()}-{len(parts)}"


def unchanged(source: Storage, key: str, local: Path, size: int, etag: str | None) -> bool:
    """True when ``local`` already holds exactly what ``key`` holds."""
    if not local.is_file() or local.stat().st_size != size:
        return False
    if etag is None:
        if isinstance(source, LocalStorage):
            return _file_md5(source.root / key) == _file_md5(local)
        return False
    if "-" not in etag:
        return _file_md5(local) == etag
    count = etag.rsplit("-", 1)[1]
    if not count.isdigit() or int(count) < 1:
        return False
    # Our own uploads use the store's chunk size; other tools mostly use 8 or 5 MiB parts, or
    # the smallest whole number of MiB that gives that many parts.
    mib = 1024 * 1024
    even = -(-size // int(count))
    candidates = {getattr(source, "multipart_chunksize", 8 * mib), 8 * mib, 5 * mib, -(-even // mib) * mib}
    data = local.read_bytes()
    return any(multipart_etag(data, s) == etag for s in candidates if s > 0)


def _file_md5(path: Path) -> str:
    h = hashlib.md5()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1024 * 1024), b""):
            h.update(chunk)
    return h.hexdigest()


def _local_path(dest_root: Path, key: str) -> Path | None:
    """Where ``key`` lands under ``dest_root``; None for a key with no safe place there."""
    parts = [p for p in key.split("/") if p]
    if not parts or any(p in ("..", ".") for p in parts) or "\\" in key or "\x00" in key:
        return None
    return dest_root.joinpath(*parts)


def _layout(dest_root: Path, items: Inventory, run_id: str) -> tuple[dict[str, Path], list[str]]:
    """Each key's local path, and the keys left out: those that would land outside
    ``dest_root`` (``..``), a key that is also another key's folder (a store allows both
    ``a`` and ``a/b``; a disk does not: the folder wins), and the run's leases (who was
    running it, not results)."""
    leases = Keys(run_id).leases
    paths: dict[str, Path] = {}
    unsafe: list[str] = []
    for key in items:
        if key.startswith(leases):
            continue
        local = _local_path(dest_root, key)
        if local is None:
            unsafe.append(key)
        else:
            paths[key] = local
    folders = {parent for local in paths.values() for parent in local.parents}
    for key, local in list(paths.items()):
        if local in folders:
            unsafe.append(key)
            del paths[key]
    return paths, sorted(unsafe)


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
    result = CollectResult(dest=dest_root / run_id)
    same_place = isinstance(source, LocalStorage) and source.root.resolve() == dest_root.resolve()
    items = {} if same_place else inventory(source, run_id)
    paths, result.unsafe = _layout(dest_root, items, run_id)
    _check_destination(dest_root, list(paths.values()))
    items = {k: v for k, v in items.items() if k in paths}
    todo = []
    for key, (size, etag) in sorted(items.items()):
        local = paths[key]
        if unchanged(source, key, local, size, etag):
            result.skipped.append(key)
        else:
            todo.append((key, local, size))
    if on_start:
        on_start(len(todo), sum(size for _k, _l, size in todo))
    if todo:
        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="collect") as pool:
            futures = {pool.submit(source.download_file, key, local): (key, size)
                       for key, local, size in todo}
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
    _assemble_missing_responses(source if same_place else None, items, dest_root, run_id, info, result)
    return result


def _responses_indices(storage: Storage, key: str) -> set[int]:
    """The question indices a responses.jsonl holds (lines cut short are skipped)."""
    try:
        text = storage.read_text(key)
    except (StorageError, UnicodeDecodeError):
        return set()
    return {obj["index"] for _, obj in jsonl.parse(text, skip_bad=True)
            if isinstance(obj, dict) and isinstance(obj.get("index"), int)}


def _assemble_missing_responses(in_place: Storage | None, items: Inventory, dest_root: Path,
                                run_id: str, info: RunInfo, result: CollectResult) -> None:
    """Rebuild each model's derived files locally where they are missing or disagree with its
    records (two shards that finished together, a pod killed at the very end)."""
    local = in_place or LocalStorage(dest_root)
    present = set(local.list(run_id)) if in_place else set(items)
    cfg = run_config(info, f"{local.url}/{Keys(run_id).run_json}")
    plan = None
    for model in cfg.models:
        spec_dir = model.model_dir
        keys = Keys(run_id, spec_dir)
        records = {i for k in present if k.startswith(keys.records) and (i := record_index(k)) is not None}
        if not records:
            continue
        if keys.responses in present and _responses_indices(local, keys.responses) == records:
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
        plan = plan or plan_from_run(info, load_staged_questions(local, run_id))
        finalize_model(local, plan, plan.task(spec_dir))
        result.assembled.append(spec_dir)


def cmd_collect(args) -> int:
    run_id = check_run_id(args.run)
    source = open_storage(source_url(args), endpoint_url=args.endpoint)
    dest_root = Path(args.dest).expanduser()
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
    for key in result.unsafe:
        warn.print(Text(f"warning: left out {key!r}: it has no safe place under {dest_root}"))
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
