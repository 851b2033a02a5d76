"""ROUGE-L F1 of an answer against a reference, as Google's ``rouge-score`` computes it.

``rouge-score`` is the package the ROUGE numbers in the literature come from, so its own
tokenizer and its Porter stemmer (NLTK's, as ``RougeScorer(["rougeL"], use_stemmer=True)``
sets up) turn each text into tokens here. Two things are done faster, with the same result:

- each distinct word is stemmed once (the stemmer is a pure function of the word, and a run's
  answers reuse a small vocabulary thousands of times);
- the longest common subsequence is counted with the bit-parallel algorithm of Allison and
  Dix (1986) on Python integers instead of rouge-score's quadratic table: one addition per
  reference token instead of one table cell per pair of tokens. It is the same LCS length,
  so precision, recall and F1 are the same numbers, bit for bit (tests/test_metrics.py
  checks that against ``RougeScorer`` itself).

``rouge-score`` is the optional extra ``report``; without it ROUGE-L is reported as
missing (None), never as a home-made approximation under the same name. Importing it pulls
in NLTK (seconds), so it happens only when a score is not already in the report's cache.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from importlib import metadata

#: What a cached ROUGE-L score depends on: the scorer's settings and the package's version.
SETTINGS: dict[str, str | bool] = {"metric": "rougeL-f1", "use_stemmer": True}


def available() -> bool:
    """True when ``rouge-score`` is installed (the ``report`` extra)."""
    return importlib.util.find_spec("rouge_score") is not None


def identity() -> dict[str, str | bool]:
    """What makes two ROUGE-L scores comparable: settings and the rouge-score version."""
    try:
        version = metadata.version("rouge-score")
    except metadata.PackageNotFoundError:
        version = "absent"
    return {**SETTINGS, "rouge_score": version}


class _CachedStemmer:
    """NLTK's Porter stemmer (the one rouge-score uses), one call per distinct word."""

    def __init__(self) -> None:
        from nltk.stem import porter

        self.stem = lru_cache(maxsize=200_000)(porter.PorterStemmer().stem)


@lru_cache(maxsize=1)
def _tokenizer():
    if not available():
        return None
    from rouge_score import tokenize

    stemmer = _CachedStemmer()
    return lambda text: tokenize.tokenize(text, stemmer)


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence of two token lists (bit-parallel)."""
    if len(a) > len(b):
        a, b = b, a  # fewer iterations over the shorter list; LCS is symmetric
    masks: dict[str, int] = {}
    for j, tok in enumerate(b):
        masks[tok] = masks.get(tok, 0) | (1 << j)
    full = (1 << len(b)) - 1
    v = full
    for tok in a:
        u = v & masks.get(tok, 0)
        v = ((v + u) | (v - u)) & full
    return len(b) - v.bit_count()


def f1_from_tokens(prediction: list[str], reference: list[str]) -> float:
    """rouge-score's ``_score_lcs`` F-measure on already tokenised texts."""
    if not prediction or not reference:
        return 0.0
    lcs = lcs_length(reference, prediction)
    precision = lcs / len(prediction)
    recall = lcs / len(reference)
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def tokenize(text: str) -> list[str] | None:
    """rouge-score's tokens of ``text`` (stemmed); None without ``rouge-score``."""
    tok = _tokenizer()
    return None if tok is None else tok(text)


def rouge_l(prediction: str | None, reference: str | None) -> float | None:
    """ROUGE-L F1 in [0, 1]; None without both texts or without ``rouge-score``."""
    if not prediction or not reference:
        return None
    pred_tokens, ref_tokens = tokenize(prediction), tokenize(reference)
    if pred_tokens is None or ref_tokens is None:
        return None
    return f1_from_tokens(pred_tokens, ref_tokens)
