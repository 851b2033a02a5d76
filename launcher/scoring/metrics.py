"""A run folder → every number the report shows, as one JSON-serialisable dict.

Per model: multiple-choice accuracy with a 95% bootstrap interval (answers with no option
found are counted apart from wrong ones; ``loglikelihood`` models also get ``acc_norm``),
latency, answer length, tokens, cost, and scores against the reference answers (ROUGE-L,
embedding similarity). Between models: McNemar's test and a paired bootstrap on the
multiple-choice items, a paired bootstrap on the reference scores, and an agreement matrix
of the answers' embeddings. Per item: every model's answer, chosen option and scores.

The dict's shape is the contract with ``launcher.report`` (see ``compute_metrics``).
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np

from launcher.scoring import rouge
from launcher.scoring.extract import extract_choice
from launcher.scoring.run_data import ModelData, RunData
from launcher.scoring.similarity import TextEncoder, cosine_pairs, resolve_encoder
from launcher.scoring.stats import bootstrap_ci, mcnemar, paired_bootstrap

ALPHA = 0.05


def _answer_ok(rec: dict | None) -> bool:
    return rec is not None and rec.get("error") is None and rec.get("response") is not None


def _summary(values: list[float], keys: tuple[str, ...]) -> dict[str, float] | None:
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


def _choice(model: ModelData, rec: dict, options: dict[str, str] | None, norm: bool = False) -> str | None:
    if model.scoring == "loglikelihood":
        return rec.get("prediction_norm" if norm else "prediction")
    return extract_choice(rec.get("response"), options)


def _encoder_specs(run: RunData) -> dict[str, dict[str, Any]]:
    return {m.model_dir: (m.manifest.get("parameters") or {"id": m.manifest.get("model", m.model_dir)})
            for m in run.models if m.kind == "embed"}


def compute_metrics(run: RunData, *, similarity_encoder: str | None = "minilm", bootstrap: int = 1000,
                    seed: int = 0) -> dict:
    """Score a run. ``similarity_encoder``: 'minilm', one of the run's encoders, or None (off).

    ``bootstrap`` resamples for every interval and paired test (0: none, intervals None).
    """
    questions = run.questions
    prose = [m for m in run.models if m.kind != "embed"]
    notes: list[str] = []
    if not rouge.available():
        notes.append("ROUGE-L not computed: install rouge-score (pip install 'medbench[report]')")

    # --- per item, per model --------------------------------------------------------------
    items = []
    per_model: dict[str, dict[str, dict[int, Any]]] = {
        m.model_dir: {"correct": {}, "correct_norm": {}, "rouge": {}, "sim": {}} for m in prose
    }
    for q in questions:
        gold = q.gold_letter
        answers = {}
        for m in prose:
            rec = m.records.get(q.index) or {}  # {}: not run, which is falsy below
            ok = _answer_ok(rec)
            choice = _choice(m, rec, q.options) if ok and q.options else None
            correct = None
            if ok and gold is not None:
                correct = None if choice is None else choice == gold
                per_model[m.model_dir]["correct"][q.index] = correct
                if m.scoring == "loglikelihood":
                    cn = _choice(m, rec, q.options, norm=True)
                    per_model[m.model_dir]["correct_norm"][q.index] = None if cn is None else cn == gold
            r_l = None
            if ok and q.reference and m.scoring == "generate":
                r_l = rouge.rouge_l(rec["response"], q.reference)
                if r_l is not None:
                    per_model[m.model_dir]["rouge"][q.index] = r_l
            answers[m.model_dir] = {
                "text": rec.get("response") if rec else None,
                "choice": choice,
                "correct": correct,
                "error": rec.get("error") if rec else "no answer recorded",
                "finish_reason": rec.get("finish_reason") if rec else None,
                "latency_s": rec.get("latency_s") if rec else None,
                "rouge_l": r_l,
                "similarity": None,
            }
        items.append({
            "index": q.index, "id": q.id, "question": q.question, "context": q.context,
            "options": q.options, "gold": gold, "reference": q.reference, "answers": answers,
        })

    # --- embeddings: answers vs references, and answers vs each other ---------------------
    encoder: TextEncoder | None = resolve_encoder(similarity_encoder, _encoder_specs(run))
    agreement = None
    free_text = [m for m in prose if m.scoring == "generate"]
    if encoder is not None and free_text:
        agreement = _similarities(encoder, questions, items, free_text, per_model)
        if encoder.note:
            notes.append(encoder.note)
        encoder.close()

    # --- per model ------------------------------------------------------------------------
    models_out = []
    for m in run.models:
        models_out.append(_model_block(m, run, per_model.get(m.model_dir), n_boot=bootstrap, seed=seed))

    # --- model vs model -------------------------------------------------------------------
    pairs, score_pairs = [], []
    for a, b in combinations(prose, 2):
        ca, cb = per_model[a.model_dir]["correct"], per_model[b.model_dir]["correct"]
        common = sorted(set(ca) & set(cb))
        if common:
            xa = [1.0 if ca[i] else 0.0 for i in common]
            xb = [1.0 if cb[i] else 0.0 for i in common]
            a_only = sum(1 for x, y in zip(xa, xb, strict=True) if x > y)
            b_only = sum(1 for x, y in zip(xa, xb, strict=True) if y > x)
            test = mcnemar(a_only, b_only)
            d = paired_bootstrap(xa, xb, n_boot=bootstrap, seed=seed)
            pairs.append({"a": a.model_dir, "b": b.model_dir, "n": len(common), "a_only_correct": a_only,
                          "b_only_correct": b_only, "mcnemar_p": test.p, "diff": d.diff,
                          "diff_ci_low": d.ci_low, "diff_ci_high": d.ci_high,
                          "significant": test.p < ALPHA})
        for metric, key in (("rouge_l", "rouge"), ("similarity", "sim")):
            sa, sb = per_model[a.model_dir][key], per_model[b.model_dir][key]
            common = sorted(set(sa) & set(sb))
            if not common:
                continue
            d = paired_bootstrap([sa[i] for i in common], [sb[i] for i in common],
                                 n_boot=bootstrap, seed=seed)
            score_pairs.append({"a": a.model_dir, "b": b.model_dir, "metric": metric, "n": d.n,
                                "diff": d.diff,
                                "ci_low": d.ci_low, "ci_high": d.ci_high, "p": d.p,
                                "significant": d.p is not None and d.p < ALPHA})

    info = run.info
    return {
        "run": {
            "run_id": info.get("run_id") or (run.path.name if run.path else None),
            "name": info.get("name"),
            "created_at": info.get("created_at"),
            "n_questions": len(questions),
            "system_prompts": info.get("system_prompts") or {},
            "versions": info.get("versions") or {},
        },
        "models": models_out,
        "pairs": pairs,
        "score_pairs": score_pairs,
        "agreement": agreement,
        "items": items,
        "notes": notes,
    }


def _similarities(encoder: TextEncoder, questions, items, models: list[ModelData],
                  per_model: dict) -> dict | None:
    """Fill per-item similarity to the reference; return the answers' agreement matrix."""
    texts: dict[str, int] = {}
    for item in items:
        if item["reference"]:
            texts.setdefault(item["reference"], len(texts))
        for m in models:
            a = item["answers"][m.model_dir]
            if a["error"] is None and a["text"]:
                texts.setdefault(a["text"], len(texts))
    if not texts:
        return None
    vectors = encoder.embed(list(texts))
    if vectors is None:
        return None
    for item in items:
        ref = item["reference"]
        for m in models:
            a = item["answers"][m.model_dir]
            if ref and a["error"] is None and a["text"]:
                s = float(cosine_pairs(vectors[[texts[a["text"]]]], vectors[[texts[ref]]])[0])
                a["similarity"] = s
                per_model[m.model_dir]["sim"][item["index"]] = s
    if len(models) < 2:
        return None
    k = len(models)
    matrix = [[1.0 if i == j else None for j in range(k)] for i in range(k)]
    for i, j in combinations(range(k), 2):
        rows_a, rows_b = [], []
        for item in items:
            a = item["answers"][models[i].model_dir]
            b = item["answers"][models[j].model_dir]
            if a["error"] is None and a["text"] and b["error"] is None and b["text"]:
                rows_a.append(texts[a["text"]])
                rows_b.append(texts[b["text"]])
        if rows_a:
            v = float(cosine_pairs(vectors[rows_a], vectors[rows_b]).mean())
            matrix[i][j] = matrix[j][i] = v
    return {"models": [m.model_dir for m in models], "matrix": matrix}


def _model_block(m: ModelData, run: RunData, scores: dict | None, *, n_boot: int, seed: int) -> dict:
    man = m.manifest
    recs = [m.records[q.index] for q in run.questions if q.index in m.records]
    ok = [r for r in recs if r.get("error") is None]
    block: dict[str, Any] = {
        "model_dir": m.model_dir,
        "model": man.get("model") or m.model_dir,
        "backend": man.get("backend"),
        "kind": m.kind,
        "scoring": m.scoring,
        "status": man.get("status") or ("complete" if len(ok) == len(run.questions) else "incomplete"),
        "n": len(run.questions),
        "answered": len(ok),
        "errors": sum(1 for r in recs if r.get("error") is not None),
        "mc": None, "mc_norm": None, "latency_s": None, "answer_words": None, "output_tokens": None,
        "rouge_l": None, "similarity": None, "cost_usd": None,
    }
    if m.kind == "embed":
        return block
    order = [q.index for q in run.questions]
    if scores is not None:
        block["mc"] = _mc_block([scores["correct"][i] for i in order if i in scores["correct"]],
                                n_boot=n_boot, seed=seed)
        if m.scoring == "loglikelihood":
            norm = scores["correct_norm"]
            block["mc_norm"] = _mc_block([norm[i] for i in order if i in norm], n_boot=n_boot, seed=seed)
        if scores["rouge"]:
            block["rouge_l"] = float(np.mean(list(scores["rouge"].values())))
        if scores["sim"]:
            block["similarity"] = float(np.mean(list(scores["sim"].values())))
    block["latency_s"] = _summary([float(r["latency_s"]) for r in ok if r.get("latency_s") is not None],
                                  ("mean", "p50", "p95"))
    if m.scoring == "generate":
        block["answer_words"] = _summary([len(r["response"].split()) for r in ok if r.get("response")],
                                         ("mean", "p50"))
        tokens = [r["output_tokens"] for r in ok if r.get("output_tokens") is not None]
        block["output_tokens"] = _summary(tokens, ("mean", "total"))
    costs = [float(r["cost_usd"]) for r in recs if r.get("cost_usd") is not None]
    if costs:
        block["cost_usd"] = float(sum(costs))
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
