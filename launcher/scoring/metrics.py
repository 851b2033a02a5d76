"""A run folder → every number the report shows, as one JSON-serialisable dict.

Per model: the metrics of ``launcher.scoring.metric_spec`` (multiple-choice accuracy with a 95%
bootstrap interval, answers with no option found counted apart from wrong ones; ``acc_norm``
for ``loglikelihood`` models; latency, answer length, tokens, cost; ROUGE-L and embedding
similarity against the reference answers), each computed from the model's answers as the spec
says, and why any is missing. Between models: McNemar's test and a paired bootstrap on the
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
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from launcher.scoring import extract as extract_module
from launcher.scoring import metric_spec, rouge
from launcher.scoring.array_cache import ArrayCache, pair_key, text_key
from launcher.scoring.extract import extract_choice
from launcher.scoring.metric_spec import GRADED, MODEL_FACTS, Answers, Settings, model_values, outcome
from launcher.scoring.run_data import ModelData, RunData
from launcher.scoring.similarity import TextEncoder, cosine_pairs, resolve_encoder
from launcher.scoring.source import source_label
from launcher.scoring.stats import MIN_PAIRED_ITEMS, mcnemar, paired_bootstrap, verdict
from runner.errors import install_hint
from runner.questions import Question

ALPHA = 0.05
NO_RECORD = "no answer recorded"


def _encoder_specs(run: RunData) -> dict[str, dict[str, Any]]:
    return {m.model_dir: (m.manifest.get("parameters") or {"id": m.manifest.get("model", m.model_dir)})
            for m in run.models if m.kind == "embed"}


class _ModelScores:
    """What scoring keeps of one model: per-item answers and scores, and its record tallies."""

    def __init__(self, model: ModelData):
        self.model = model
        self.answers: dict[int, dict[str, Any]] = {}
        self.correct: dict[int, bool | None] = {}
        self.rouge: dict[int, float] = {}
        self.sim: dict[int, float] = {}
        #: One entry per record, in question order: the columns ``metric_spec.Answers`` holds.
        self.indices: list[int] = []
        self.record_columns: dict[str, list[Any]] = {name: [] for name in (
            "outcome", "outcome_norm", "latency_s", "output_tokens", "cost_usd", "words")}

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
        cols = self.record_columns
        for index, q in questions.items():
            s = by_index.get(index)
            if s is None:
                if prose:
                    self.answers[index] = {"text": None, "choice": None, "correct": None, "error": NO_RECORD,
                                           "finish_reason": None, "latency_s": None, "rouge_l": None,
                                           "similarity": None}
                continue
            gold = q.gold_letter
            graded = outcome(s["choice"], gold, bool(q.options), s["error"], s["text"])
            self.indices.append(index)
            cols["outcome"].append(graded)
            cols["outcome_norm"].append(outcome(s["choice_norm"], gold, True, None, s["text"])
                                        if s["loglik"] and graded in GRADED else None)
            cols["latency_s"].append(s["latency_s"])
            cols["output_tokens"].append(s["output_tokens"])
            cols["cost_usd"].append(s["cost_usd"])
            cols["words"].append(len(s["text"].split()) if s["text"] else None)
            if not prose:
                continue
            correct = None
            if graded in GRADED:
                correct = None if graded == "no_answer" else graded == "correct"
                self.correct[index] = correct
            ok = s["error"] is None and s["text"] is not None
            self.answers[index] = {"text": s["text"], "choice": s["choice"] if ok else None,
                                   "correct": correct, "error": s["error"],
                                   "finish_reason": s["finish_reason"], "latency_s": s["latency_s"],
                                   "rouge_l": None, "similarity": None}

    def columns(self) -> Answers:
        """The model's answers as the metrics read them (after ROUGE-L and similarity are in)."""
        return Answers.of(self.model.scoring, {
            **self.record_columns,
            "rouge_l": [self.rouge.get(i) for i in self.indices],
            "similarity": [self.sim.get(i) for i in self.indices],
        })

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
    # Metrics switched off for the whole run, and why (each model's empty cell says so).
    off: dict[str, str] = {}
    if not rouge.available():
        notes.append(f"ROUGE-L not computed: install rouge-score ({install_hint('report')})")
        off["rouge_l"] = "not computed: rouge-score is not installed"
    # Fail on a wrong --encoder before any work.
    encoder: TextEncoder | None = resolve_encoder(similarity_encoder, _encoder_specs(run))
    if encoder is None:
        off["similarity"] = "not computed (--encoder none)"

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
            if encoder.note.startswith("similarity not computed"):  # the encoder could not be loaded
                off["similarity"] = encoder.note.removeprefix("similarity ")
        encoder.close()

    settings = Settings(bootstrap=bootstrap, seed=seed)
    models_out = [_model_block(scores[m.model_dir], run, settings, off) for m in run.models]
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


def _model_block(s: _ModelScores, run: RunData, settings: Settings, off: dict[str, str]) -> dict:
    """A model's facts, then each metric of the spec, then why any metric is missing."""
    m = s.model
    man = m.manifest
    n = len(run.questions)
    answers = s.columns()
    values, missing = model_values(answers, settings, off)
    answered = int(np.count_nonzero(answers.ok))
    facts = {
        "model_dir": m.model_dir,
        "model": man.get("model") or m.model_dir,
        "backend": man.get("backend"),
        "kind": m.kind,
        "scoring": m.scoring,
        "status": man.get("status") or ("complete" if answered == n else "incomplete"),
        "n": n,
    }
    return {**facts, **values, "missing": missing}


def metrics_table_rows(metrics: dict) -> list[dict]:
    """One flat row per model, for metrics.csv: its facts, then each metric's columns."""
    rows = []
    for m in metrics["models"]:
        row: dict[str, Any] = {k: m.get(k) for k in MODEL_FACTS}
        for metric in metric_spec.METRICS:
            row.update(metric.flat(m.get(metric.name)))
        rows.append(row)
    return rows


__all__ = ["MIN_PAIRED_ITEMS", "compute_metrics", "metrics_table_rows"]
