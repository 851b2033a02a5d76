"""ROUGE-L F1 of an answer against a reference, through Google's ``rouge-score``.

``rouge-score`` is the package the ROUGE numbers in the literature come from (Porter
stemming, its own tokenizer), so our figures can be compared with published ones. It is the
optional extra ``medbench[report]``; without it ROUGE-L is reported as missing (None), never
as a home-made approximation under the same name.
"""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def _scorer():
    try:
        from rouge_score import rouge_scorer
    except ImportError:
        return None
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def available() -> bool:
    """True when ``rouge-score`` is installed (pip install 'medbench[report]')."""
    return _scorer() is not None


def rouge_l(prediction: str | None, reference: str | None) -> float | None:
    """ROUGE-L F1 in [0, 1]; None without both texts or without ``rouge-score``."""
    scorer = _scorer()
    if scorer is None or not prediction or not reference:
        return None
    return float(scorer.score(reference, prediction)["rougeL"].fmeasure)
