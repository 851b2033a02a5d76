"""How big a model's weights are, without downloading them: what sizing starts from.

For a Hub model, in order (the first that answers wins):

1. the launcher's metadata cache (``<cache>/hub/<repo>@<revision>.json``, see ``launcher.cache``),
   so ``render`` works offline once a model has been looked up;
2. the Hub itself, unless ``HF_HUB_OFFLINE`` is set: model info (is it gated; the parameter count
   per dtype the Hub computes from the safetensors headers), else the safetensors headers read
   with HTTP Range requests (``get_safetensors_metadata``), plus ``config.json`` for the shape
   the KV cache needs. ``revision`` is respected; ``HF_TOKEN`` opens gated repos (MedGemma).
   What it finds is written to the cache;
3. ``config.json`` from the local Hugging Face cache, by arithmetic;
4. the size written in the id (``medgemma-27b``, ``PMC_LLaMA_13B``, ``Mixtral-8x7B``).

``path:`` models that point at a folder on this machine are read from that folder instead.
Every step that fails leaves a note saying why, which ``launcher render`` shows when nothing
better was found. ``huggingface_hub`` is imported only here, and only when needed.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from launcher.cache import cache_dir, read_json, write_json

#: safetensors dtype names and what one element takes
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I64": 8, "I32": 4,
               "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
_DTYPE_NAMES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}
# Encoder and GPT-2-style blocks have two MLP matrices; Llama-style gated MLPs have three.
_TWO_MATRIX_MLP = {"gpt2", "gpt_neo", "gptj", "gpt_neox", "gpt_bigcode", "opt", "bloom", "falcon", "biogpt",
                   "phi", "bert", "roberta", "xlm-roberta", "electra", "deberta", "deberta-v2", "distilbert",
                   "mpnet", "megatron-bert"}
# A size stands alone between separators: "-27b-", "_13B", "-8x7B"; not "4bit" or "v2b".
_ID_SIZE = re.compile(r"(?:^|[-_. ])(?:(\d+)x)?(\d+(?:\.\d+)?)([bm])(?![a-z0-9])", re.IGNORECASE)


@dataclass(frozen=True)
class Arch:
    """The shape facts the KV cache depends on."""

    layers: int
    hidden: int
    kv_heads: int
    head_dim: int
    vocab: int | None = None
    tied: bool = True
    max_positions: int | None = None


@dataclass(frozen=True)
class Weights:
    params: int
    #: the checkpoint's dtype ("bfloat16", "float16", "float32"); None when only the id said the size
    dtype: str | None
    source: str  #: where the figures came from, for people: "the Hub's safetensors metadata", ...
    arch: Arch | None = None
    #: exact bytes of the checkpoint's tensors, from safetensors headers
    checkpoint_bytes: int | None = None


@dataclass
class Lookup:
    weights: Weights | None
    gated: bool | None = None
    notes: list[str] = field(default_factory=list)


# --- sizes from what a config or an id says ------------------------------------------------------


def _first(c: dict, *keys: str) -> Any:
    for k in keys:
        if c.get(k) is not None:
            return c[k]
    return None


def _lm_config(config: dict) -> dict:
    """The language model's part of a config (multimodal ones nest it under text_config)."""
    inner = config.get("text_config")
    return inner if isinstance(inner, dict) else config


def arch_from_config(config: dict) -> Arch | None:
    c = _lm_config(config)
    hidden = _first(c, "hidden_size", "n_embd", "d_model")
    layers = _first(c, "num_hidden_layers", "n_layer", "num_layers")
    heads = _first(c, "num_attention_heads", "n_head", "num_heads")
    if not all(isinstance(x, int) and x > 0 for x in (hidden, layers, heads)):
        return None
    kv = _first(c, "num_key_value_heads", "num_kv_heads")
    if kv is None:
        kv = 1 if c.get("multi_query") else heads
    head_dim = c.get("head_dim") or hidden // heads
    tied = c.get("tie_word_embeddings", config.get("tie_word_embeddings", True))
    return Arch(layers=layers, hidden=hidden, kv_heads=int(kv), head_dim=int(head_dim),
                vocab=_first(c, "vocab_size", "n_vocab"), tied=bool(tied),
                max_positions=_first(c, "max_position_embeddings", "n_positions", "n_ctx"))


def params_from_config(config: dict) -> int | None:
    """The parameter count a transformer with this config has (norms and biases left out: <0.5%)."""
    arch = arch_from_config(config)
    if arch is None:
        return None
    c = _lm_config(config)
    h = arch.hidden
    heads = _first(c, "num_attention_heads", "n_head", "num_heads")
    q = heads * arch.head_dim
    kv = arch.kv_heads * arch.head_dim
    attention = 2 * h * q + 2 * h * kv
    inter = _first(c, "intermediate_size", "n_inner", "ffn_dim") or 4 * h
    model_type = str(c.get("model_type") or config.get("model_type") or "")
    matrices = 2 if model_type in _TWO_MATRIX_MLP else 3
    experts = _first(c, "num_local_experts", "num_experts", "n_routed_experts") or 1
    mlp = matrices * h * inter * experts
    total = arch.layers * (attention + mlp)
    if arch.vocab:
        total += arch.vocab * h * (1 if arch.tied else 2)
    if model_type in _TWO_MATRIX_MLP and arch.max_positions and model_type not in ("gpt_neox", "falcon"):
        total += arch.max_positions * h  # learned position embeddings
    return int(total)


def config_dtype(config: dict) -> str | None:
    c = _lm_config(config)
    d = _first(c, "torch_dtype", "dtype") or _first(config, "torch_dtype", "dtype")
    return d if d in ("float32", "float16", "bfloat16") else None


def params_from_id(model_id: str) -> tuple[int, str] | None:
    """``(parameters, the text that said so)`` from an id like ``medgemma-27b-text-it``; the largest
    size written wins, and ``8x7B`` counts every expert (an over-estimate, on the safe side)."""
    name = model_id.rsplit("/", 1)[-1]
    best: tuple[int, str] | None = None
    for m in _ID_SIZE.finditer(name):
        value = float(m[2]) * (1e9 if m[3].lower() == "b" else 1e6) * (int(m[1]) if m[1] else 1)
        if value >= 1e6 and (best is None or value > best[0]):
            best = (int(value), m[0].lstrip("-_. "))
    return best


def _counts_weights(counts: dict[str, int], source: str, config: dict | None) -> Weights | None:
    counts = {k: int(v) for k, v in counts.items() if isinstance(v, int | float) and v > 0}
    if not counts:
        return None
    main = max(counts, key=lambda k: counts[k])
    arch = arch_from_config(config) if config else None
    nbytes = sum(n * DTYPE_BYTES.get(k, 2) for k, n in counts.items())
    dtype = _DTYPE_NAMES.get(main) or (config_dtype(config) if config else None)
    return Weights(params=sum(counts.values()), dtype=dtype, source=source, arch=arch,
                   checkpoint_bytes=nbytes)


def weights_from_entry(entry: dict, cached: bool) -> Weights | None:
    """Weights from a cache entry (what the Hub said about one repo at one revision)."""
    config = entry.get("config") if isinstance(entry.get("config"), dict) else None
    suffix = ", cached" if cached else ""
    counts = entry.get("params_by_dtype")
    if isinstance(counts, dict):
        w = _counts_weights(counts, f"the Hub's safetensors metadata{suffix}", config)
        if w is not None:
            return w
    if config:
        params = params_from_config(config)
        if params:
            return Weights(params=params, dtype=config_dtype(config),
                           source=f"config.json on the Hub{suffix}", arch=arch_from_config(config))
    return None


# --- the local folder of a path: model -----------------------------------------------------------


def _local_header_counts(path: Path) -> dict[str, int]:
    with path.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    counts: dict[str, int] = {}
    for name, t in header.items():
        if name == "__metadata__" or not isinstance(t, dict):
            continue
        size = 1
        for d in t.get("shape", []):
            size *= int(d)
        counts[t["dtype"]] = counts.get(t["dtype"], 0) + size
    return counts


def from_folder(folder: Path) -> Weights | None:
    config = read_json(folder / "config.json")
    config = config if isinstance(config, dict) else None
    counts: dict[str, int] = {}
    try:
        for f in sorted(folder.glob("*.safetensors")):
            for k, v in _local_header_counts(f).items():
                counts[k] = counts.get(k, 0) + v
    except (OSError, ValueError, KeyError, struct.error):
        counts = {}
    w = _counts_weights(counts, f"safetensors headers in {folder}", config)
    if w is None and config and (params := params_from_config(config)):
        w = Weights(params=params, dtype=config_dtype(config), source=f"config.json in {folder}",
                    arch=arch_from_config(config))
    return w


# --- the Hub and the caches ----------------------------------------------------------------------


def entry_path(repo_id: str, revision: str | None) -> Path:
    rev = quote(revision or "main", safe="")
    return cache_dir() / "hub" / f"{repo_id.replace('/', '--')}@{rev}.json"


def _hf() -> Any | None:
    try:
        import huggingface_hub
    except ImportError:
        return None
    return huggingface_hub


def _short(e: BaseException) -> str:
    first = (str(e).strip().splitlines() or [""])[0]
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def fetch_from_hub(repo_id: str, revision: str | None, notes: list[str]) -> dict | None:
    """What the Hub says about the repo at this revision, as a cache entry; None (with notes) if nothing."""
    import os

    hf = _hf()
    if hf is None:
        notes.append("the Hub was not asked: huggingface_hub is not installed (pip install huggingface_hub)")
        return None
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    if hf.constants.is_offline_mode():
        notes.append("the Hub was not asked (HF_HUB_OFFLINE is set)")
        return None
    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=os.environ.get("HF_TOKEN") or None)
    entry: dict[str, Any] = {"repo": repo_id, "revision": revision or "main",
                             "fetched_at": datetime.now(UTC).isoformat(timespec="seconds")}
    quiet = are_progress_bars_disabled()
    disable_progress_bars()  # render's output is YAML and one line per model, not progress bars
    # Every step is optional: sizing falls back to a weaker source, so each failure becomes a note.
    # The transport's exceptions differ between huggingface_hub releases (requests, httpx, httpx2),
    # hence the broad catch; the note keeps the exception's type and first line.
    try:
        try:
            info = api.model_info(repo_id, revision=revision, timeout=10)
            entry["sha"] = info.sha
            entry["gated"] = bool(info.gated)
            if info.safetensors is not None:
                entry["params_by_dtype"] = dict(info.safetensors.parameters)
        except (RepositoryNotFoundError, RevisionNotFoundError) as e:
            where = f"revision {revision!r} of " if isinstance(e, RevisionNotFoundError) else ""
            notes.append(f"{where}{repo_id} was not found on the Hub ({api.endpoint})")
            return None
        except Exception as e:  # noqa: BLE001 - see above
            notes.append(f"the Hub did not answer for {repo_id}: {_short(e)}")
            return None
        if "params_by_dtype" not in entry:
            try:
                meta = api.get_safetensors_metadata(repo_id, revision=revision)
                counts: dict[str, int] = {}
                for f in meta.files_metadata.values():
                    for k, v in f.parameter_count.items():
                        counts[k] = counts.get(k, 0) + v
                entry["params_by_dtype"] = counts
            except GatedRepoError:
                notes.append(f"{repo_id} is gated: set HF_TOKEN to a token that has accepted its terms")
            except Exception as e:  # noqa: BLE001 - not a safetensors repo (.bin weights), or unreadable
                notes.append(f"no safetensors metadata for {repo_id}: {_short(e)}")
        try:
            path = api.hf_hub_download(repo_id, "config.json", revision=revision)
            config = read_json(Path(path))
            if isinstance(config, dict):
                entry["config"] = config
        except GatedRepoError:
            if not any("gated" in n for n in notes):
                notes.append(f"{repo_id} is gated: set HF_TOKEN to a token that has accepted its terms")
        except Exception as e:  # noqa: BLE001
            notes.append(f"no config.json for {repo_id}: {_short(e)}")
    finally:
        if not quiet:
            enable_progress_bars()
    return entry


def _from_hf_cache(repo_id: str, revision: str | None) -> Weights | None:
    hf = _hf()
    if hf is None:
        return None
    try:
        found = hf.try_to_load_from_cache(repo_id, "config.json", revision=revision)
    except ValueError:  # not a Hub repo id: nothing of it can be cached
        return None
    if not isinstance(found, str):
        return None
    config = read_json(Path(found))
    if not isinstance(config, dict) or not (params := params_from_config(config)):
        return None
    return Weights(params=params, dtype=config_dtype(config),
                   source="config.json in the local Hugging Face cache", arch=arch_from_config(config))


def find_weights(model_id: str, revision: str | None = None, path: str | None = None) -> Lookup:
    """The model's weights from the best source there is; ``Lookup.weights`` None when none knew."""
    notes: list[str] = []
    if path and not path.startswith("pkg:") and Path(path).expanduser().is_dir():
        w = from_folder(Path(path).expanduser())
        if w is not None:
            return Lookup(w)
        notes.append(f"no safetensors or config.json in {path}")
    cached = read_json(entry_path(model_id, revision))
    if isinstance(cached, dict) and (w := weights_from_entry(cached, cached=True)) is not None:
        return Lookup(w, gated=cached.get("gated"))
    entry = fetch_from_hub(model_id, revision, notes)
    gated = entry.get("gated") if entry else None
    if entry is not None and (w := weights_from_entry(entry, cached=False)) is not None:
        try:
            write_json(entry_path(model_id, revision), entry)
        except OSError as e:
            notes.append(f"could not cache the Hub's answer: {e}")
        return Lookup(w, gated=gated, notes=notes)
    w = _from_hf_cache(model_id, revision)
    if w is not None:
        return Lookup(w, gated=gated, notes=notes)
    from_id = params_from_id(model_id)
    if from_id is not None:
        params, text = from_id
        return Lookup(Weights(params=params, dtype=None, source=f"the size in its id ('{text}')"),
                      gated=gated, notes=notes)
    return Lookup(None, gated=gated, notes=notes)
