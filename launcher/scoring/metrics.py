"""A run folder → every number the report shows, as one JSON-serialisable dict.

Per model: multiple-choice accuracy with a 95% bootstrap interval (answers with no option
found are counted apart from wrong ones; ``loglikelihood`` models also get ``acc_norm``),
latency, answer length, tokens, cost, and scores against the reference answers (ROUGE-L,
embedding similarity). Between models: McNemar's test and a paired bootstrap on the
multiple-choice items, a paired bootstrap on the reference scores, and an agreement matrix
of the answers' embeddings; a pair sharing fewer than ``MIN_PAIRED_ITEMS`` items gets the
verdict "too few items" instead of one. Per item: every model's answer, chosen option and
scores.

Each model's records are streamed once (``ModelData.iter_records``); only what the report
shows of an answer is kept. The option each free-text answer chose, ROUGE-L scores and
embeddings are read from the run's cache (``launcher.scoring.array_cache``) and only the missing
ones are computed.

The dict's shape is the contract with ``launcher.report`` (see ``compute_metrics``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from launcher.scoring import extract as extract_module
from launcher.scoring import rouge
from launcher.scoring.array_cache import ArrayCache, pair_key, text_key
from launcher.scoring.extract import extract_choice
from launcher.scoring.run_data import ModelData, RunData
from launcher.scoring.similarity import TextEncoder, cosine_pairs, resolve_encoder
from launcher.scoring.source import source_label
from launcher.scoring.stats import MIN_PAIRED_ITEMS, bootstrap_ci, mcnemar, paired_bootstrap, verdict
from runner.errors import install_hint
from runner.questions import Question

ALPHA = 0.05
NO_RECORD = "no answer recorded"


def _summary(values: Sequence[float], keys: tuple[str, ...]) -> dict[str, float] | None:
    if not values:
        return None
    x = np.asarray(values, dtype=np.float64)
    out = {}
    for k in keys:
        if k == "mean":
            out[k] = float(x.mean())
        elif k == "total":
            out[k] = float(x.sum())
        else:
            out[k] = float(np.percentile(x, int(k[1:])))
    return out


def _mc_block(correct: list[bool | None], *, n_boot: int, seed: int) -> dict[str, Any] | None:
    """Counts and accuracy over answered gold items: True right, False wrong, None no answer."""
    if not correct:
        return None
    right = sum(1 for c in correct if c is True)
    wrong = sum(1 for c in correct if c is False)
    none = sum(1 for c in correct if c is None)
    scores = [1.0 if c else 0.0 for c in correct]
    lo, hi = bootstrap_ci(scores, n_boot=n_boot, seed=seed)
    return {"n": len(correct), "correct": right, "wrong": wrong, "no_answer": none,
            "accuracy": right / len(correct), "ci_low": lo, "ci_high": hi}


def _encoder_specs(run: RunData) -> dict[str, dict[str, Any]]:
    return {m.model_dir: (m.manifest.get("parameters") or {"id": m.manifest.get("model", m.model_dir)})
            for m in run.models if m.kind == "embed"}


class _ModelScores:
    """What scoring keeps of one model: per-item answers and scores, and its record tallies."""

    def __init__(self, model: ModelData):
        self.model = model
        self.answers: dict[int, dict[str, Any]] = {}
        self.correct: dict[int, bool | None] = {}
        self.correct_norm: dict[int, bool | None] = {}
        self.rouge: dict[int, float] = {}
        self.sim: dict[int, float] = {}
        self.n_ok = self.n_errors = 0
        self.latency: list[float] = []
        self.words: list[int] = []
        self.tokens: list[int] = []
        self.costs: list[float] = []

    def read(self, questions: dict[int, Question], choices: _Choices) -> None:
        """Stream the model's records once, keeping what the report shows."""
        prose = self.model.kind != "embed"
        by_index: dict[int, dict[str, Any]] = {}
        manifest_ll = (self.model.manifest.get("parameters") or {}).get("scoring") == "loglikelihood"
        for index, rec in self.model.iter_records():
            q = questions.get(index)
            if q is None:
                continue
            by_index[index] = _slim(rec, q, loglik=manifest_ll or "option_loglikelihoods" in rec, prose=prose)
        # Free-text answers to multiple-choice questions: which option each chose.
        pending: list[dict[str, Any]] = []
        asked: list[tuple[str, dict[str, str]]] = []
        for index, slim in by_index.items():
            if slim["extract"]:
                options = questions[index].options
                assert options is not None  # _slim extracts only for multiple-choice questions
                pending.append(slim)
                asked.append((slim["text"], options))
        for slim, choice in zip(pending, choices.of(asked), strict=True):
            slim["choice"] = choice
        for index in questions:
            s = by_index.get(index)
            if s is None:
                continue
            if s["cost_usd"] is not None:
                self.costs.append(float(s["cost_usd"]))
            if s["error"] is not None:
                self.n_errors += 1
                continue
            self.n_ok += 1
            if s["latency_s"] is not None:
                self.latency.append(float(s["latency_s"]))
            if s["text"]:
                self.words.append(len(s["text"].split()))
            if s["output_tokens"] is not None:
                self.tokens.append(s["output_tokens"])
        if not prose:
            return
        for index, q in questions.items():
            s = by_index.get(index)
            if s is None:
                self.answers[index] = {"text": None, "choice": None, "correct": None, "error": NO_RECORD,
                                       "finish_reason": None, "latency_s": None, "rouge_l": None,
                                       "similarity": None}
                continue
            ok = s["error"] is None and s["text"] is not None
            gold = q.gold_letter
            correct = None
            if ok and gold is not None:
                correct = None if s["choice"] is None else s["choice"] == gold
                self.correct[index] = correct
                if s["loglik"]:
                    cn = s["choice_norm"]
                    self.correct_norm[index] = None if cn is None else cn == gold
            self.answers[index] = {"text": s["text"], "choice": s["choice"] if ok else None,
                                   "correct": correct, "error": s["error"],
                                   "finish_reason": s["finish_reason"], "latency_s": s["latency_s"],
                                   "rouge_l": None, "similarity": None}

    def free_text(self) -> bool:
        return self.model.kind != "embed" and self.model.scoring == "generate"


def _slim(rec: dict[str, Any], q: Question, *, loglik: bool, prose: bool) -> dict[str, Any]:
    """The fields of a record the report uses; the prompt and the rest are dropped here."""
    error = rec.get("error")
    text = rec.get("response")
    ok = error is None and text is not None
    choice = choice_norm = None
    extract = False
    if prose and ok and q.options:
        if loglik:
            choice, choice_norm = rec.get("prediction"), rec.get("prediction_norm")
        else:
            extract = True  # found for all answers at once, through the cache
    return {"text": text, "error": error, "finish_reason": rec.get("finish_reason"),
            "latency_s": rec.get("latency_s"), "output_tokens": rec.get("output_tokens"),
            "cost_usd": rec.get("cost_usd"), "choice": choice, "choice_norm": choice_norm, "loglik": loglik,
            "extract": extract}


class _Choices:
    """``extract_choice`` for many answers, its results kept in the run's cache.

    Keyed by the answer's text and the question's options; the cache identity is a hash of
    extract.py itself, so any change to the rules finds every choice again.
    """

    def __init__(self, cache_dir: Path | None):
        self.store = (ArrayCache(cache_dir, "choices", "extract", {"rules": _rules_hash()}, np.float64)
                      if cache_dir else None)
        self.new_keys: list[bytes] = []
        self.new_values: list[float] = []

    def of(self, answers: list[tuple[str, dict[str, str]]]) -> list[str | None]:
        keys = [pair_key(text_key(text), text_key(json.dumps(list(options.items()))))
                for text, options in answers]
        found = self.store.get(keys) if self.store is not None and keys else {}
        out: list[str | None] = []
        for (text, options), key in zip(answers, keys, strict=True):
            labels = list(options)
            if key in found:
                at = int(found[key][0])
                out.append(labels[at] if 0 <= at < len(labels) else None)
                continue
            choice = extract_choice(text, options)
            at = labels.index(choice) if choice in labels else -1
            found[key] = np.array([at])
            self.new_keys.append(key)
            self.new_values.append(at)
            out.append(choice)
        return out

    def save(self) -> str | None:
        if self.store is None or not self.new_keys:
            return None
        self.store.put(self.new_keys, np.array(self.new_values, dtype=np.float64).reshape(-1, 1))
        return self.store.note


def _rules_hash() -> str:
    return hashlib.sha256(Path(extract_module.__file__).read_bytes()).hexdigest()[:16]


def compute_metrics(run: RunData, *, similarity_encoder: str | None = "minilm", bootstrap: int = 1000,
                    seed: int = 0, cache: bool = True) -> dict:
    """Score a run. ``similarity_encoder``: 'minilm', 'minilm-256', one of the run's encoders,
    or None (off).

    ``bootstrap`` resamples for every interval and paired test (0: none, intervals None).
    ``cache``: read and keep ROUGE-L scores and embeddings in ``<run>/.cache`` (when the run
    has a folder).
    """
    questions = {q.index: q for q in run.questions}
    cache_dir = run.path if cache else None
    notes: list[str] = []
    if not rouge.available():
        notes.append(f"ROUGE-L not computed: install rouge-score ({install_hint('report')})")
    # Fail on a wrong --encoder before any work.
    encoder: TextEncoder | None = resolve_encoder(similarity_encoder, _encoder_specs(run))

    scores = {m.model_dir: _ModelScores(m) for m in run.models}
    choices = _Choices(cache_dir)
    for s in scores.values():
        s.read(questions, choices)
    note = choices.save()
    if note:
        notes.append(note)
    prose = [scores[m.model_dir] for m in run.models if m.kind != "embed"]
    free_text = [s for s in prose if s.free_text()]

    if rouge.available():
        note = _rouge_scores(free_text, questions, cache_dir)
        if note:
            notes.append(note)

    agreement, similarity = None, None
    if encoder is not None and free_text:
        agreement = _similarities(encoder, questions, free_text, cache_dir)
        counts = {"from_run": encoder.from_run, "from_cache": encoder.from_cache,
                  "embedded": encoder.embedded}
        if any(counts.values()):
            similarity = {"encoder": encoder.name, "texts": sum(counts.values()), **counts}
        if encoder.note:
            notes.append(encoder.note)
        encoder.close()

    models_out = [_model_block(scores[m.model_dir], run, n_boot=bootstrap, seed=seed) for m in run.models]
    pairs, score_pairs = _pairs(prose, bootstrap, seed)

    items = []
    for q in run.questions:
        items.append({
            "index": q.index, "id": q.id, "question": q.question, "context": q.context,
            "options": q.options, "gold": q.gold_letter, "reference": q.reference,
            "answers": {s.model.model_dir: s.answers[q.index] for s in prose},
        })

    info = run.info
    return {
        "run": {
            "run_id": info.get("run_id") or (run.path.name if run.path else None),
            "name": info.get("name"),
            "created_at": info.get("created_at"),
            "n_questions": len(run.questions),
            "system_prompts": info.get("system_prompts") or {},
            "versions": info.get("versions") or {},
            # A named benchmark's provenance, as run.json has it, and the line that names it.
            "questions_source": info.get("questions_source"),
            "questions_label": source_label(info.get("questions_source")),
        },
        "models": models_out,
        "pairs": pairs,
        "score_pairs": score_pairs,
        "agreement": agreement,
        "similarity": similarity,
        "items": items,
        "notes": notes,
    }


def _rouge_scores(models: list[_ModelScores], questions: dict[int, Question],
                  cache_dir: Path | None) -> str | None:
    """ROUGE-L of every free-text answer against its question's reference, cached by text pair."""
    wanted: list[tuple[_ModelScores, int, bytes]] = []
    ref_keys: dict[int, bytes] = {}
    for index, q in questions.items():
        if q.reference:
            ref_keys[index] = text_key(q.reference)
    for s in models:
        for index, a in s.answers.items():
            if index in ref_keys and a["error"] is None and a["text"]:
                wanted.append((s, index, pair_key(text_key(a["text"]), ref_keys[index])))
    if not wanted:
        return None
    store = ArrayCache(cache_dir, "rouge-l", "rouge-l", rouge.identity(), np.float64) if cache_dir else None
    found = store.get([k for _, _, k in wanted]) if store else {}
    new_keys, new_values = [], []
    ref_tokens: dict[int, list[str]] = {}
    for s, index, key in wanted:
        if key in found:
            value = float(found[key][0])
        else:
            if index not in ref_tokens:
                reference = questions[index].reference
                assert reference  # only questions with a reference are in ``wanted``
                tokens = rouge.tokenize(reference)
                assert tokens is not None  # the caller checked rouge.available()
                ref_tokens[index] = tokens
            answer_tokens = rouge.tokenize(s.answers[index]["text"])
            assert answer_tokens is not None
            value = rouge.f1_from_tokens(answer_tokens, ref_tokens[index])
            found[key] = np.array([value])  # the same answer to the same question, from another model
            new_keys.append(key)
            new_values.append(value)
        s.answers[index]["rouge_l"] = value
        s.rouge[index] = value
    if store is not None and new_keys:
        store.put(new_keys, np.array(new_values, dtype=np.float64).reshape(-1, 1))
        return store.note
    return None


def _similarities(encoder: TextEncoder, questions: dict[int, Question], models: list[_ModelScores],
                  cache_dir: Path | None) -> dict | None:
    """Fill per-answer similarity to the reference; return the answers' agreement matrix."""
    rows: dict[str, int] = {}
    for q in questions.values():
        if q.reference:
            rows.setdefault(q.reference, len(rows))
    for s in models:
        for a in s.answers.values():
            if a["error"] is None and a["text"]:
                rows.setdefault(a["text"], len(rows))
    if not rows:
        return None
    vectors = encoder.vectors(list(rows), cache_dir)
    if vectors is None:
        return None
    order = list(questions)
    # Row of each model's answer to each question in ``vectors`` (-1: none).
    answer_rows = np.full((len(models), len(order)), -1, dtype=np.int64)
    references = [questions[i].reference for i in order]
    ref_rows = np.array([rows[ref] if ref else -1 for ref in references])
    for k, s in enumerate(models):
        for col, index in enumerate(order):
            a = s.answers[index]
            if a["error"] is None and a["text"]:
                answer_rows[k, col] = rows[a["text"]]
        both = (answer_rows[k] >= 0) & (ref_rows >= 0)
        if both.any():
            sims = cosine_pairs(vectors[answer_rows[k, both]], vectors[ref_rows[both]])
            for pos, value in zip(np.flatnonzero(both), sims, strict=True):
                index = order[pos]
                s.answers[index]["similarity"] = float(value)
                s.sim[index] = float(value)
    if len(models) < 2:
        return None
    k = len(models)
    matrix: list[list[float | None]] = [[1.0 if i == j else None for j in range(k)] for i in range(k)]
    for i, j in combinations(range(k), 2):
        both = (answer_rows[i] >= 0) & (answer_rows[j] >= 0)
        if both.any():
            v = float(cosine_pairs(vectors[answer_rows[i, both]], vectors[answer_rows[j, both]]).mean())
            matrix[i][j] = matrix[j][i] = v
    return {"models": [s.model.model_dir for s in models], "matrix": matrix}


def _pairs(prose: list[_ModelScores], n_boot: int, seed: int) -> tuple[list[dict], list[dict]]:
    pairs, score_pairs = [], []
    for a, b in combinations(prose, 2):
        ca, cb = a.correct, b.correct
        common = sorted(set(ca) & set(cb))
        if common:
            xa = [1.0 if ca[i] else 0.0 for i in common]
            xb = [1.0 if cb[i] else 0.0 for i in common]
            a_only = sum(1 for x, y in zip(xa, xb, strict=True) if x > y)
            b_only = sum(1 for x, y in zip(xa, xb, strict=True) if y > x)
            test = mcnemar(a_only, b_only)
            d = paired_bootstrap(xa, xb, n_boot=n_boot, seed=seed)
            v = verdict(test.p, len(common), ALPHA)
            pairs.append({"a": a.model.model_dir, "b": b.model.model_dir, "n": len(common),
                          "a_only_correct": a_only, "b_only_correct": b_only, "mcnemar_p": test.p,
                          "diff": d.diff, "diff_ci_low": d.ci_low, "diff_ci_high": d.ci_high,
                          "significant": _significant(v), "verdict": v})
        for metric, sa, sb in (("rouge_l", a.rouge, b.rouge), ("similarity", a.sim, b.sim)):
            common = sorted(set(sa) & set(sb))
            if not common:
                continue
            d = paired_bootstrap([sa[i] for i in common], [sb[i] for i in common], n_boot=n_boot, seed=seed)
            v = verdict(d.p, d.n, ALPHA)
            score_pairs.append({"a": a.model.model_dir, "b": b.model.model_dir, "metric": metric, "n": d.n,
                                "diff": d.diff, "ci_low": d.ci_low, "ci_high": d.ci_high, "p": d.p,
                                "significant": _significant(v), "verdict": v})
    return pairs, score_pairs


def _significant(v: str) -> bool | None:
    """True/False for a verdict; None when there were too few items to give one."""
    return None if v == "too few items" else v == "real difference"


def _model_block(s: _ModelScores, run: RunData, *, n_boot: int, seed: int) -> dict:
    m = s.model
    man = m.manifest
    n = len(run.questions)
    block: dict[str, Any] = {
        "model_dir": m.model_dir,
        "model": man.get("model") or m.model_dir,
        "backend": man.get("backend"),
        "kind": m.kind,
        "scoring": m.scoring,
        "status": man.get("status") or ("complete" if s.n_ok == n else "incomplete"),
        "n": n,
        "answered": s.n_ok,
        "errors": s.n_errors,
        "mc": None, "mc_norm": None, "latency_s": None, "answer_words": None, "output_tokens": None,
        "rouge_l": None, "similarity": None, "cost_usd": None,
    }
    if m.kind == "embed":
        return block
    order = [q.index for q in run.questions]
    block["mc"] = _mc_block([s.correct[i] for i in order if i in s.correct], n_boot=n_boot, seed=seed)
    if m.scoring == "loglikelihood":
        block["mc_norm"] = _mc_block([s.correct_norm[i] for i in order if i in s.correct_norm],
                                     n_boot=n_boot, seed=seed)
    if s.rouge:
        block["rouge_l"] = float(np.mean(list(s.rouge.values())))
    if s.sim:
        block["similarity"] = float(np.mean(list(s.sim.values())))
    block["latency_s"] = _summary(s.latency, ("mean", "p50", "p95"))
    if m.scoring == "generate":
        block["answer_words"] = _summary(s.words, ("mean", "p50"))
        block["output_tokens"] = _summary(s.tokens, ("mean", "total"))
    if s.costs:
        block["cost_usd"] = float(sum(s.costs))
    return block


def metrics_table_rows(metrics: dict) -> list[dict]:
    """One flat row per model, for metrics.csv."""
    rows = []
    for m in metrics["models"]:
        row: dict[str, Any] = {k: m[k] for k in ("model_dir", "model", "backend", "kind", "scoring", "status",
                                                "n", "answered", "errors")}
        for prefix, block in (("mc", m.get("mc")), ("mc_norm", m.get("mc_norm"))):
            for k in ("n", "correct", "wrong", "no_answer", "accuracy", "ci_low", "ci_high"):
                row[f"{prefix}_{k}"] = block.get(k) if block else None
        for name, keys in (("latency_s", ("mean", "p50", "p95")), ("answer_words", ("mean", "p50")),
                           ("output_tokens", ("mean", "total"))):
            block = m.get(name)
            for k in keys:
                row[f"{name}_{k}"] = block.get(k) if block else None
        for k in ("rouge_l", "similarity", "cost_usd"):
            row[k] = m.get(k)
        rows.append(row)
    return rows


__all__ = ["MIN_PAIRED_ITEMS", "compute_metrics", "metrics_table_rows"]
