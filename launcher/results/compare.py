"""Runs compared: a leaderboard over any number of runs, paired tests, and what changed between two.

- **Leaderboard**: one row per model configuration (``model_key``: the same model, revision,
  prompt and settings in any run is one row), one column per benchmark. A cell holds every
  question of that benchmark the configuration answered in any of the runs; a question answered
  in several runs counts once, with its latest answer. Accuracy (as the report counts it: no
  option found is not correct, errors are not graded) with a 95% percentile-bootstrap
  interval; cost per correct answer where costs are known.
- **Pairs**: every two rows of one benchmark, on the questions both answered *with the same
  prompt* (``prompt_hash``: the same question, system prompt and template; ``match="question"``
  pairs on the question alone, to compare prompts): McNemar's test and a paired bootstrap of
  the accuracy difference, the report's own statistics (``launcher.scoring.stats``), with its
  verdicts ("too few items" below 20 shared questions).
- **Flips** (exactly two runs): each model folder the two runs share, item by item on their
  shared questions: the answers whose correctness changed, side by side.

Everything is computed from the tidy samples table (``launcher.results``) with pyarrow and
numpy: strings become sorted integer codes once, so 500,000 answers are grouped and joined as
arrays, not Python objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from launcher.results import Results
from launcher.results.schema import SCHEMA_VERSION, require
from launcher.scoring.stats import bootstrap_ci, mcnemar, paired_bootstrap, verdict
from runner.errors import InputError

ALPHA = 0.05
MATCHES = ("prompt", "question")
_COLUMNS = ["run_id", "run_created_at", "run_status", "benchmark", "questions_label", "model_dir",
            "model_id", "model_key", "model_revision", "backend", "quantization", "prompt_preset", "scoring",
            "temperature", "question_index", "question_hash", "prompt_hash", "correct", "cost_usd",
            "output_tokens"]
_FLIP_COLUMNS = ["model_dir", "question_hash", "prompt_hash", "question_index", "question_id", "question",
                 "gold", "answer", "choice", "outcome", "correct"]


@dataclass
class _Codes:
    """A string column as integer codes (-1: null) whose order is the strings' sorted order."""

    codes: np.ndarray
    values: list[Any]


def _encode(column: Any) -> _Codes:
    pc = require("pyarrow.compute")
    encoded = column.combine_chunks().dictionary_encode()
    order = pc.array_sort_indices(encoded.dictionary).to_numpy()
    rank = np.empty(len(order) + 1, dtype=np.int64)
    rank[order] = np.arange(len(order))
    rank[-1] = -1  # where a null's index (-1) lands
    indices = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    return _Codes(rank[indices], encoded.dictionary.take(order).to_pylist())


def _numbers(column: Any, fill: float) -> np.ndarray:
    pc = require("pyarrow.compute")
    return pc.fill_null(pc.cast(column, "float64"), fill).to_numpy(zero_copy_only=False)


def compare(results: Results, *, benchmarks: list[str] | None = None, models: list[str] | None = None,
            match: str = "prompt", bootstrap: int = 1000, seed: int = 0,
            flips_limit: int | None = None) -> dict:
    """The comparison of the loaded runs as one JSON-serialisable dict (see the module docstring)."""
    pa, pc = require("pyarrow"), require("pyarrow.compute")
    if match not in MATCHES:
        raise InputError(f"--match {match}: expected one of {', '.join(MATCHES)}")
    table = results.samples(_COLUMNS)
    runs_table = results.runs()
    if benchmarks:
        known = set(table.column("benchmark").unique().to_pylist())
        unknown = [b for b in benchmarks if b not in known]
        if unknown:
            raise InputError(f"--benchmark {unknown[0]}: not in these runs; they hold: "
                             f"{', '.join(sorted(str(k) for k in known)) or 'none'}")
        table = table.filter(pc.is_in(table.column("benchmark"), value_set=pa.array(benchmarks)))
    if models:
        mask = None
        for text in models:
            hit = pc.or_(pc.match_substring(table.column("model_id"), text, ignore_case=True),
                         pc.match_substring(table.column("model_dir"), text, ignore_case=True))
            mask = hit if mask is None else pc.or_(mask, hit)
        table = table.filter(mask)
        if table.num_rows == 0:
            raise InputError(f"--model {', '.join(models)}: no model of these runs matches")
    present = set(table.column("run_id").unique().to_pylist())
    runs = [r for r in _runs(runs_table) if r["run_id"] in present or not (benchmarks or models)]
    out: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "match": match, "runs": runs,
                           "benchmarks": [], "leaderboard": [], "pairs": [], "flips": [], "shared": None,
                           "notes": []}
    if table.num_rows == 0:
        return out
    data = _Data(table)
    board, groups = _leaderboard(data, bootstrap, seed)
    out["benchmarks"] = sorted({bench for row in board for bench in row["cells"]})
    out["leaderboard"] = board
    out["pairs"] = _pairs(data, board, groups, match, bootstrap, seed)
    if len(runs) == 2:
        out["shared"] = _shared(data, runs, match)
        out["flips"] = _flips(results, runs, set(table.column("model_dir").unique().to_pylist()), match,
                              flips_limit)
    return out


class _Data:
    """The samples' columns compare needs, as numpy arrays and sorted codes."""

    def __init__(self, table: Any):
        pc = require("pyarrow.compute")
        self.run = _encode(table.column("run_id"))
        self.benchmark = _encode(table.column("benchmark"))
        self.model = _encode(table.column("model_key"))
        self.question = _encode(table.column("question_hash"))
        self.prompt = _encode(table.column("prompt_hash"))
        self.correct = pc.fill_null(pc.cast(table.column("correct"), "int8"), -1).to_numpy(
            zero_copy_only=False).astype(np.int8)
        created = pc.cast(pc.cast(table.column("run_created_at"), "timestamp[ms]"), "int64")
        self.created = pc.fill_null(created, 0).to_numpy(zero_copy_only=False)
        self.index = pc.fill_null(table.column("question_index"), 0).to_numpy(zero_copy_only=False)
        self.cost = _numbers(table.column("cost_usd"), np.nan)
        self.tokens = _numbers(table.column("output_tokens"), np.nan)
        self.table = table


def _runs(runs_table: Any) -> list[dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for row in runs_table.select(["run_id", "run_name", "run_created_at", "run_status", "source", "benchmark",
                                  "questions_label", "model_dir", "kind"]).to_pylist():
        run = out.setdefault(row["run_id"], {
            "run_id": row["run_id"], "name": row["run_name"], "source": row["source"],
            "created_at": row["run_created_at"].isoformat() if row["run_created_at"] else None,
            "status": row["run_status"], "benchmark": row["benchmark"],
            "questions_label": row["questions_label"], "models": []})
        run["models"].append(row["model_dir"])
    return sorted(out.values(), key=lambda r: (r["created_at"] or "", r["run_id"]))


def _latest(data: _Data, rows: np.ndarray) -> np.ndarray:
    """Of ``rows`` (graded answers), the latest answer of each (model, benchmark, question)."""
    order = np.lexsort((data.created[rows], data.question.codes[rows], data.benchmark.codes[rows],
                        data.model.codes[rows]))
    rows = rows[order]
    keys = np.stack([data.model.codes[rows], data.benchmark.codes[rows], data.question.codes[rows]])
    last = np.ones(len(rows), dtype=bool)
    if len(rows) > 1:
        last[:-1] = np.any(keys[:, 1:] != keys[:, :-1], axis=0)
    return rows[last]


def _leaderboard(data: _Data, n_boot: int, seed: int) -> tuple[list[dict], dict[tuple[int, int], np.ndarray]]:
    graded = np.flatnonzero(data.correct >= 0)
    kept = _latest(data, graded)
    group = data.model.codes[kept] * (len(data.benchmark.values) + 1) + data.benchmark.codes[kept]
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]]) if len(kept) else np.array([], dtype=int)
    ends = np.r_[starts[1:], len(kept)]
    groups: dict[tuple[int, int], np.ndarray] = {}
    for s, e in zip(starts, ends, strict=True):
        rows = kept[s:e]
        # In question order, as the report lists them: one run's cell gets the report's interval.
        rows = rows[np.argsort(data.index[rows], kind="stable")]
        groups[(int(data.model.codes[rows[0]]), int(data.benchmark.codes[rows[0]]))] = rows
    # Each model key's facts from its latest answer anywhere (graded or not).
    order = np.lexsort((data.created, data.model.codes))
    last = order[np.r_[data.model.codes[order][1:] != data.model.codes[order][:-1], True]]
    facts = data.table.take(last).to_pylist()
    by_key = {int(data.model.codes[i]): fact for i, fact in zip(last, facts, strict=True)}
    runs_of: dict[int, set[str]] = {}
    partial: dict[int, bool] = {}
    board: dict[int, dict[str, Any]] = {}
    # By size: the bootstrap's resamples of one size are drawn once (launcher.scoring.stats).
    for (mk, bm), rows in sorted(groups.items(), key=lambda kv: len(kv[1])):
        row = board.setdefault(mk, _row(by_key[mk]))
        values = data.correct[rows].astype(np.float64)
        lo, hi = bootstrap_ci(values, n_boot=n_boot, seed=seed)
        correct = int(values.sum())
        cost = data.cost[rows]
        known = cost[~np.isnan(cost)]
        tokens = data.tokens[rows]
        run_ids = sorted({data.run.values[c] for c in np.unique(data.run.codes[rows])})
        statuses = data.table.column("run_status").take(rows).unique().to_pylist()
        total_cost = float(known.sum()) if len(known) else None
        row["cells"][data.benchmark.values[bm]] = {
            "benchmark": data.benchmark.values[bm], "n": int(len(rows)), "correct": correct,
            "accuracy": correct / len(rows), "ci_low": lo, "ci_high": hi,
            "cost_usd": total_cost,
            "cost_per_correct": total_cost / correct if total_cost is not None and correct else None,
            "output_tokens_mean": float(np.nanmean(tokens)) if np.any(~np.isnan(tokens)) else None,
            "runs": run_ids, "partial": "partial" in statuses,
        }
        runs_of.setdefault(mk, set()).update(run_ids)
        partial[mk] = partial.get(mk, False) or "partial" in statuses
    for mk, row in board.items():
        row["runs"] = sorted(runs_of.get(mk, ()))
        row["partial"] = partial.get(mk, False)
        accs = [c["accuracy"] for c in row["cells"].values()]
        row["mean_accuracy"] = float(np.mean(accs)) if accs else None
    rows_out = sorted(board.values(), key=lambda r: (-(r["mean_accuracy"] or 0.0), r["label"]))
    _unique_labels(rows_out)
    for rank, row in enumerate(rows_out, start=1):
        row["rank"] = rank
    return rows_out, groups


def _row(fact: dict[str, Any]) -> dict[str, Any]:
    return {"model_key": fact["model_key"], "label": fact["model_dir"], "model_id": fact["model_id"],
            "model_dir": fact["model_dir"], "revision": fact["model_revision"],
            "revision_short": _short(fact["model_revision"]) if fact["model_revision"] else None,
            "backend": fact["backend"],
            "quantization": fact["quantization"], "prompt_preset": fact["prompt_preset"],
            "scoring": fact["scoring"], "temperature": fact["temperature"], "cells": {}}


def _unique_labels(rows: list[dict[str, Any]]) -> None:
    """Rows of one model folder apart by what differs: revision, prompt, quantization, or the key."""
    by_label: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_label.setdefault(r["label"], []).append(r)
    for same in by_label.values():
        if len(same) < 2:
            continue
        for r in same:
            bits = []
            for field, fmt in (("revision", "@{}"), ("prompt_preset", "[{}]"), ("quantization", "{}"),
                               ("temperature", "T={}")):
                if len({str(x[field]) for x in same}) > 1 and r[field] is not None:
                    bits.append(fmt.format(_short(r[field]) if field == "revision" else r[field]))
            r["label"] = f"{r['label']} {' '.join(bits)}".rstrip() if bits else r["label"]
        if len({r["label"] for r in same}) < len(same):
            for r in same:
                r["label"] = f"{r['label']} #{r['model_key'][:6]}"


def _short(revision: str) -> str:
    """A commit as git prints it (7 hex digits); an API's model version as it is."""
    return revision[:7] if len(revision) > 12 and all(c in "0123456789abcdef" for c in revision) else revision


def _items(data: _Data, rows: np.ndarray, match: str) -> tuple[np.ndarray, np.ndarray]:
    """(sorted item codes, the cell's rows in that order) of one leaderboard cell."""
    codes = (data.prompt if match == "prompt" else data.question).codes[rows]
    order = np.argsort(codes, kind="stable")
    return codes[order], rows[order]


def _pairs(data: _Data, board: list[dict], groups: dict[tuple[int, int], np.ndarray], match: str,
           n_boot: int, seed: int) -> list[dict]:
    label = {r["model_key"]: r["label"] for r in board}
    rank = {r["model_key"]: r["rank"] for r in board}
    by_benchmark: dict[int, list[int]] = {}
    for mk, bm in groups:
        by_benchmark.setdefault(bm, []).append(mk)
    shared: list[tuple[int, int, int, int, np.ndarray, np.ndarray]] = []
    for bm in sorted(by_benchmark):
        keys = sorted(by_benchmark[bm], key=lambda k: rank[data.model.values[k]])
        items = {mk: _items(data, groups[(mk, bm)], match) for mk in keys}
        for i, a in enumerate(keys):
            for b in keys[i + 1:]:
                (ia, ra), (ib, rb) = items[a], items[b]
                _, pa_, pb_ = np.intersect1d(ia, ib, assume_unique=True, return_indices=True)
                if not len(pa_):
                    continue
                # In A's question order, as the report pairs two models of one run.
                order = np.argsort(data.index[ra[pa_]], kind="stable")
                ya = data.correct[ra[pa_][order]].astype(np.float64)
                yb = data.correct[rb[pb_][order]].astype(np.float64)
                shared.append((len(shared), bm, a, b, ya, yb))
    out: list[dict] = [{} for _ in shared]
    # By size: the bootstrap's resamples of one size are drawn once (launcher.scoring.stats).
    for at, bm, a, b, ya, yb in sorted(shared, key=lambda s: len(s[4])):
        a_only, b_only = int(np.sum(ya > yb)), int(np.sum(yb > ya))
        test = mcnemar(a_only, b_only)
        d = paired_bootstrap(ya.tolist(), yb.tolist(), n_boot=n_boot, seed=seed)
        v = verdict(test.p, len(ya), ALPHA)
        out[at] = {"benchmark": data.benchmark.values[bm], "a": label[data.model.values[a]],
                   "b": label[data.model.values[b]], "a_key": data.model.values[a],
                   "b_key": data.model.values[b],
                   "n": int(len(ya)), "a_correct": int(ya.sum()), "b_correct": int(yb.sum()),
                   "a_only_correct": a_only, "b_only_correct": b_only, "mcnemar_p": test.p, "diff": d.diff,
                   "diff_ci_low": d.ci_low, "diff_ci_high": d.ci_high, "verdict": v,
                   "significant": None if v == "too few items" else v == "real difference"}
    return out


def _shared(data: _Data, runs: list[dict], match: str) -> dict[str, Any]:
    """How many questions each of two runs holds and how many they share (by question hash)."""
    a, b = (runs[0]["run_id"], runs[1]["run_id"])
    code = {v: i for i, v in enumerate(data.run.values)}
    qa = set(data.question.codes[data.run.codes == code.get(a, -2)].tolist())
    qb = set(data.question.codes[data.run.codes == code.get(b, -2)].tolist())
    pa_ = set(data.prompt.codes[data.run.codes == code.get(a, -2)].tolist())
    pb_ = set(data.prompt.codes[data.run.codes == code.get(b, -2)].tolist())
    return {"a": a, "b": b, "a_questions": len(qa), "b_questions": len(qb), "questions": len(qa & qb),
            "prompts": len(pa_ & pb_), "match": match}


def _flips(results: Results, runs: list[dict], model_dirs: set[str], match: str,
           limit: int | None) -> list[dict]:
    """Per model folder of both runs: the answers whose correctness changed from the older to the newer."""
    tables = {t.ref.url: t for t in results.tables}
    older, newer = tables[runs[0]["source"]], tables[runs[1]["source"]]
    key = "prompt_hash" if match == "prompt" else "question_hash"
    a_rows = older.samples(_FLIP_COLUMNS).to_pylist()
    b_rows = newer.samples(_FLIP_COLUMNS).to_pylist()
    out = []
    for model_dir in [m for m in runs[0]["models"] if m in set(runs[1]["models"]) and m in model_dirs]:
        a = {r[key]: r for r in a_rows if r["model_dir"] == model_dir and r["correct"] is not None}
        b = {r[key]: r for r in b_rows if r["model_dir"] == model_dir and r["correct"] is not None}
        shared = [k for k in b if k in a]
        if not shared:
            continue
        items = []
        for k in sorted(shared, key=lambda k: b[k]["question_index"]):
            ra, rb = a[k], b[k]
            if ra["correct"] == rb["correct"]:
                continue
            items.append({"question_id": rb["question_id"], "question_index": rb["question_index"],
                          "question": rb["question"], "gold": rb["gold"],
                          "a": {f: ra[f] for f in ("answer", "choice", "outcome")},
                          "b": {f: rb[f] for f in ("answer", "choice", "outcome")}})
        worse = sum(1 for it in items if it["a"]["outcome"] == "correct")
        out.append({"model_dir": model_dir, "a": runs[0]["run_id"], "b": runs[1]["run_id"], "n": len(shared),
                    "flipped": len(items), "right_to_wrong": worse, "wrong_to_right": len(items) - worse,
                    "items": items if limit is None else items[:limit]})
    return out
