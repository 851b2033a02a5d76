"""Multiple-choice scoring by log-likelihood, defined exactly as lm-evaluation-harness does.

For a prompt (the *context*) and options ``o_1 … o_k``, option ``j`` is the continuation
``" " + o_j`` (lm-eval's default ``target_delimiter``) and its score is the sum of the
log-probabilities of the continuation's tokens given everything before them. Tokenisation
follows lm-eval's ``HFLM`` for causal models (``TemplateLM._encode_pair``):

- trailing whitespace of the context moves to the front of the continuation;
- ``whole = encode(context + continuation)``, ``ctx = encode(context)``, and the
  continuation's tokens are ``whole[len(ctx):]`` (so a merge across the boundary is
  scored the way lm-eval scores it);
- ``encode`` uses the tokenizer's own special-token default (BOS where the tokenizer adds
  one), except that a string already starting with the BOS text gets none added;
- an input longer than the model's window is cut from the left to ``max_length + 1`` tokens
  and its last token dropped.

``acc`` picks the option with the largest sum; ``acc_norm`` divides each sum by the
option's length in characters (``len(choice)``), as lm-evaluation-harness does.

Rows that feed the model the same tokens (``context + continuation[:-1]``: one-token
options of one question) share one forward pass, as lm-eval's logits cache does, and
distinct rows are right-padded into batches. Right padding keeps every real token at the
position it has when scored alone, which is what makes the numbers match lm-eval's.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch

TARGET_DELIMITER = " "
# Upper bound on logits held at once (rows x padded length x vocabulary) for models that
# cannot limit their logits to the scored positions: about 1 GiB in float32. The vocabulary
# is large (49k-256k), so this, not the row count, limits such a batch.
MAX_LOGIT_ELEMENTS = 1 << 28


@dataclass
class ScoredItem:
    """One question's option log-likelihoods, or why it could not be scored."""

    loglikelihoods: list[float] | None = None
    context_tokens: int | None = None
    error: str | None = None


def _tok_encode(tokenizer, text: str) -> list[int]:
    bos = tokenizer.bos_token
    if bos and text.startswith(bos):
        return tokenizer.encode(text, add_special_tokens=False)
    return tokenizer.encode(text)


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Context and continuation token ids, split the way lm-eval's ``_encode_pair`` does."""
    if context == "":
        # lm-eval conditions an empty context on the BOS (or EOS) token alone.
        prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        cont = tokenizer.encode(continuation, add_special_tokens=False)
        return ([prefix], cont) if cont[:1] != [prefix] else (cont[:1], cont[1:])
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = _tok_encode(tokenizer, context + continuation)
    ctx = _tok_encode(tokenizer, context)
    return ctx, whole[len(ctx) :]


def max_length_of(model, tokenizer, default: int = 2048) -> int:
    """The model's context window, looked up in the order lm-eval uses."""
    configs = [getattr(model.config, "text_config", None), model.config]
    for cfg in configs:
        if cfg is None:
            continue
        for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
            value = getattr(cfg, attr, None)
            if isinstance(value, int) and value > 0:
                return value
    limit = getattr(tokenizer, "model_max_length", None)
    # Tokenizers without a limit report a huge sentinel (int(1e30)).
    if isinstance(limit, int) and 0 < limit < 1_000_000_000:
        return limit
    return default


@dataclass
class _Row:
    item: int
    option: int
    inp: tuple[int, ...]
    cont: list[int]


def _scored(inp: tuple[int, ...], row: _Row) -> range:
    return range(len(inp) - len(row.cont), len(inp))


def score_options(
    model,
    tokenizer,
    items: list[tuple[str, list[str]]],
    *,
    rows_per_batch: int = 64,
    max_length: int | None = None,
) -> list[ScoredItem]:
    """Log-likelihood of each option of each ``(context, options)`` item, in option order."""
    max_length = max_length or max_length_of(model, tokenizer)
    out = [ScoredItem() for _ in items]
    rows: list[_Row] = []
    for i, (context, options) in enumerate(items):
        if not options:
            out[i].error = "scoring: loglikelihood needs a multiple-choice question; this one has no options"
            continue
        for j, option in enumerate(options):
            ctx, cont = encode_pair(tokenizer, context, TARGET_DELIMITER + option)
            if not cont:
                out[i].error = f"option {j + 1} ({option!r}) encodes to no tokens after the prompt"
                break
            if len(cont) > max_length:
                out[i].error = f"option {j + 1} is longer than the model's window ({max_length} tokens)"
                break
            out[i].context_tokens = len(ctx)
            inp = tuple((ctx + cont)[-(max_length + 1) :][:-1])
            rows.append(_Row(i, j, inp, cont))
        if out[i].error is None:
            out[i].loglikelihoods = [0.0] * len(options)
    rows = [r for r in rows if out[r.item].error is None]

    # Identical inputs give identical logits: run each distinct input once.
    unique: dict[tuple[int, ...], list[_Row]] = {}
    for r in rows:
        unique.setdefault(r.inp, []).append(r)
    inputs = sorted(unique, key=len, reverse=True)
    vocab = model.get_output_embeddings().weight.shape[0] if model.get_output_embeddings() else 0
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device

    keep = "logits_to_keep" in inspect.signature(model.forward).parameters
    start = 0
    while start < len(inputs):
        width = len(inputs[start])
        fit = rows_per_batch if keep else max(1, MAX_LOGIT_ELEMENTS // max(1, width * max(vocab, 1)))
        batch = inputs[start : start + min(rows_per_batch, fit)]
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for b, inp in enumerate(batch):
            ids[b, : len(inp)] = torch.tensor(inp, dtype=torch.long)
            mask[b, : len(inp)] = 1
        # Logits at position t predict token t+1: a continuation of n tokens is predicted by
        # the last n positions of its (unpadded) input. Only those positions are projected
        # onto the vocabulary when the model allows it.
        needed = sorted({t for inp in batch for r in unique[inp] for t in _scored(inp, r)})
        kwargs = {"logits_to_keep": torch.tensor(needed, device=device)} if keep else {}
        column = {t: k for k, t in enumerate(needed)} if keep else {t: t for t in range(width)}
        with torch.inference_mode():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs).logits
        for b, inp in enumerate(batch):
            for r in unique[inp]:
                cols = [column[t] for t in _scored(inp, r)]
                window = logits[b, cols].float().log_softmax(dim=-1)
                target = torch.tensor(r.cont, dtype=torch.long, device=window.device)
                ll = window.gather(1, target.unsqueeze(1)).sum()
                scores = out[r.item].loglikelihoods
                assert scores is not None  # only rows of items without an error are scored
                scores[r.option] = float(ll)
        del logits
        start += len(batch)
    return out


def scored_choices(options: dict[str, str] | None, mode: str) -> list[str]:
    """What is scored after the prompt for each option: its text, or its letter (``letters``,
    as lm-evaluation-harness scores MedQA, MedMCQA and MMLU). With letters every choice is one
    character, so ``acc_norm`` equals ``acc``, as in the harness."""
    if not options:
        return []
    return list(options) if mode == "letters" else list(options.values())


def predictions(loglikelihoods: list[float], options: list[str]) -> tuple[int, int]:
    """Indices of the ``acc`` choice and the ``acc_norm`` (per character) choice.

    ``acc_norm`` divides each option's log-likelihood by the option's length in characters
    (Python ``len``, code points), as lm-eval's ``acc_norm`` does with ``len(choice)``; bytes
    would weigh a non-ASCII option ("naïve", "β-blocker") as longer than it is. Ties go to the
    first option, as ``numpy.argmax`` does in lm-eval.
    """
    best = max(range(len(options)), key=lambda j: (loglikelihoods[j], -j))
    normed = [ll / max(1, len(o)) for ll, o in zip(loglikelihoods, options, strict=True)]
    best_norm = max(range(len(options)), key=lambda j: (normed[j], -j))
    return best, best_norm
