"""Rows of one split of a benchmark, from the Hub (through ``datasets`` and its cache) or a local copy.

``datasets`` is imported only here, and only when a benchmark is actually loaded, so the
launcher's other commands (and a pod reading a staged questions.jsonl) never need it.
``HF_DATASETS_OFFLINE=1`` / ``HF_HUB_OFFLINE=1`` work as ``datasets`` defines them: the
cached copy is used, and without one the user is told how to pre-download it.

Local copies are read by split explicitly (``test-00000-of-00001.parquet``, ``test.json``,
``test/0000.parquet``, MedQA's ``dev.json`` for validation) rather than by ``datasets``'
pattern inference, which folds MMLU's ``dev`` files into ``validation``.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.benchmarks.catalogue import Benchmark
from runner.benchmarks.errors import DatasetUnavailable, UnknownSplit
from runner.errors import install_hint

_COMMIT = re.compile(r"[0-9a-f]{40}")
_BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv"}


@dataclass
class Loaded:
    """One split's rows and where they came from."""

    rows: Any  # a datasets.Dataset: indexable, len(), column_names
    source: str  # "hub" or "local"
    revision: str | None  # the Hub commit ``datasets`` resolved (None for local copies)
    files_sha256: str | None = None  # local copies: digest of the files read


def _datasets():
    try:
        import datasets
    except ModuleNotFoundError:
        raise DatasetUnavailable(
            "named benchmarks need the 'datasets' package: " + install_hint("benchmarks")
        ) from None
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    return datasets


def download_command(bench: Benchmark, subject: str | None, split: str, revision: str | None = None) -> str:
    subject_arg = f" --subject {subject}" if subject else ""
    revision_arg = f" --revision {revision}" if revision else ""
    return f"launcher benchmarks {bench.name}{subject_arg} --split {split}{revision_arg} --download"


def _cache_dir(datasets) -> str:
    return str(datasets.config.HF_DATASETS_CACHE)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def resolved_revision(ds) -> str | None:
    """The Hub commit a loaded split came from: ``datasets`` caches under ``.../<commit>/``."""
    for f in getattr(ds, "cache_files", None) or []:
        parent = Path(f["filename"]).parent.name
        if _COMMIT.fullmatch(parent):
            return parent
    return None


def load_hub(bench: Benchmark, subject: str | None, split: str, revision: str | None, *,
             requested: bool = False) -> Loaded:
    """``revision`` is the catalogue's pin, or the user's own commit when ``requested``."""
    datasets = _datasets()
    where = f"{bench.dataset}@{revision[:7] if revision else 'main'}"
    kwargs: dict[str, Any] = {"path": bench.dataset, "split": split, "revision": revision}
    if bench.config_for(subject):
        kwargs["name"] = bench.config_for(subject)
    if bench.data_dir:
        kwargs["data_dir"] = bench.data_dir
    fetch = download_command(bench, subject, split, revision if requested else None)
    try:
        ds = datasets.load_dataset(**kwargs)
    except ConnectionError as e:
        offline = " (offline mode is on)" if datasets.config.HF_HUB_OFFLINE else ""
        raise DatasetUnavailable(
            f"{bench.name}: {where} is not in the datasets cache ({_cache_dir(datasets)}) and the Hub "
            f"cannot be reached{offline}; on a machine with network run "
            f"`{fetch}` and copy that cache here (or point "
            f"HF_DATASETS_CACHE at it), or give a local copy with path:"
        ) from e
    except datasets.exceptions.DatasetNotFoundError as e:
        raise DatasetUnavailable(f"{bench.name}: {where}: {_first_line(e)}") from e
    except ValueError as e:
        if "Unknown split" in str(e):
            raise UnknownSplit(f"{bench.name}: {where} has no split {split!r}: {_first_line(e)}") from e
        # A config or file the catalogue names is gone: the repository changed under the pin.
        raise DatasetUnavailable(f"{bench.name}: {where}: cannot load: {_first_line(e)}") from e
    except (OSError, datasets.exceptions.DatasetGenerationError) as e:
        raise DatasetUnavailable(f"{bench.name}: {where}: cannot load: {_first_line(e)}") from e
    got = resolved_revision(ds)
    if revision and got and got != revision:
        # Offline, datasets falls back to whichever revision it cached last.
        raise DatasetUnavailable(
            f"{bench.name}: the datasets cache holds {bench.dataset}@{got[:7]}, not the "
            f"{'requested' if requested else 'pinned'} {revision[:7]}, and the Hub cannot be reached; "
            f"run `{fetch}` with network, or set revision: {got} "
            "to use the cached one knowingly"
        )
    return Loaded(rows=ds, source="hub", revision=got or revision)


def _split_files(folder: Path, split: str, splits: dict[str, int]) -> list[Path]:
    """The files of ``split`` in a folder laid out like the dataset's Hub repository."""
    names = [split]
    if split == "validation" and "dev" not in splits:
        names.append("dev")  # MedQA's dev.json is its validation split
    found = []
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or p.suffix not in _BUILDERS:
            continue
        rel = p.relative_to(folder).parts
        stem = p.name[: -len(p.suffix)]
        for name in names:
            if name in rel[:-1] or stem == name or stem.startswith((f"{name}-", f"{name}_")):
                found.append(p)
                break
    return found


def _digest(files: list[Path]) -> str:
    """Of the files' bytes, in the order read: the same data gives the same digest wherever it lies."""
    h = hashlib.sha256()
    for f in files:
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def load_local(bench: Benchmark, subject: str | None, split: str, path: Path) -> Loaded:
    datasets = _datasets()
    if not path.exists():
        raise DatasetUnavailable(f"{bench.name}: path {path}: no such file or folder")
    if path.is_file():
        if path.suffix not in _BUILDERS:
            raise DatasetUnavailable(
                f"{bench.name}: path {path}: expected a .parquet, .json, .jsonl or .csv file, or a folder"
            )
        files, root = [path], path
    else:
        sub = bench.local_folder_for(subject)
        root = path / sub if sub and (path / sub).is_dir() else path
        splits = bench.splits_for(subject)
        files = _split_files(root, split, splits)
        if not files:
            present = [s for s in splits if _split_files(root, s, splits)]
            raise UnknownSplit(
                f"{bench.name}: {root} holds no files of split {split!r} "
                f"(found: {', '.join(present) or 'none'}; expected names like "
                f"{split}-00000-of-00001.parquet, {split}.json or {split}/0000.parquet)"
            )
    builders = {_BUILDERS[f.suffix] for f in files}
    if len(builders) > 1:
        raise DatasetUnavailable(f"{bench.name}: split {split!r} under {root} mixes file formats")
    try:
        ds = datasets.load_dataset(builders.pop(), data_files={split: [os.fspath(f) for f in files]},
                                   split=split)
    except (OSError, ValueError, datasets.exceptions.DatasetGenerationError) as e:
        raise DatasetUnavailable(f"{bench.name}: cannot read {path}: {_first_line(e)}") from e
    return Loaded(rows=ds, source="local", revision=None, files_sha256=_digest(files))
