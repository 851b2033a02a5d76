"""Scoring a run folder: accuracy, no-answer counted apart, model pairs, per-item answers.

The run folder is written here by hand in the layout the runner leaves (DESIGN.md), so every
expected number can be checked against the answers themselves.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest

from launcher.scoring.metrics import compute_metrics, metrics_table_rows
from launcher.scoring.run_data import load_run
from runner.errors import InputError

YNM = ["yes", "no", "maybe"]
QUESTIONS = [
    {"id": "q1", "question": "Does A work?", "options": YNM, "answer": "yes",
     "reference": "Yes, A reduced mortality in the trial."},
    {"id": "q2", "question": "Does B work?", "options": YNM, "answer": "no",
     "reference": "No, B showed no benefit over placebo."},
    {"id": "q3", "question": "Does C work?", "options": YNM, "answer": "maybe"},
    {"id": "q4", "question": "Does D work?", "options": YNM, "answer": "yes"},
    {"id": "q5", "question": "What is tamoxifen?", "reference": "A selective oestrogen receptor modulator."},
]
# model -> answers to q1..q5 (None: the question failed with an error)
GENERATED = {
    "alpha": ["Answer: A", "The answer is no.", "**C**", "I cannot say.",
              "A selective oestrogen receptor modulator used in breast cancer."],
    "beta": ["B", "B", "A", None, "A drug."],
}
# loglikelihood model: option log-likelihoods per MC item
LOGLIK = {1: [-1.0, -2.0, -3.0], 2: [-3.0, -1.0, -2.0], 3: [-2.0, -1.5, -1.9], 4: [-1.2, -1.0, -5.0]}


def _write_model(run: Path, name: str, records: list[dict], scoring: str = "generate") -> None:
    folder = run / name
    folder.mkdir(parents=True)
    manifest = {"run_id": run.name, "model": f"org/{name}", "model_dir": name, "backend": "hf",
                "kind": "generate", "status": "complete", "parameters": {"id": f"org/{name}",
                                                                          "scoring": scoring}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "responses.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.fixture
def run_dir(tmp_path) -> Path:
    run = tmp_path / "demo-123"
    run.mkdir()
    (run / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    (run / "run.json").write_text(json.dumps({
        "run_id": "demo-123", "name": "demo", "created_at": "2026-01-01T00:00:00+00:00",
        "config": {"models": [{"id": "org/beta", "name": "beta"}, {"id": "org/alpha", "name": "alpha"}]},
        "system_prompts": {"alpha": "Be brief.", "beta": None}, "versions": {"medbench": "0.1.0"},
        "questions_sha256": "x", "n_questions": 5,
    }))
    for name, answers in GENERATED.items():
        recs = []
        for i, text in enumerate(answers, start=1):
            rec = {"id": f"q{i}", "index": i, "prompt": "p", "response": text, "latency_s": 0.5 * i,
                   "output_tokens": 10 * i, "finish_reason": "stop"}
            if text is None:
                rec["error"] = "timed out"
            recs.append(rec)
        _write_model(run, name, recs)
    recs = []
    for i, lls in LOGLIK.items():
        best = int(np.argmax(lls))
        best_norm = int(np.argmax([ll / len(o) for ll, o in zip(lls, YNM, strict=True)]))
        recs.append({"id": f"q{i}", "index": i, "prompt": "p", "response": YNM[best], "latency_s": 0.1,
                     "option_loglikelihoods": lls, "prediction": "ABC"[best],
                     "prediction_norm": "ABC"[best_norm]})
    recs.append({"id": "q5", "index": 5, "prompt": "p", "error": "scoring: loglikelihood needs options"})
    _write_model(run, "ll", recs, scoring="loglikelihood")
    enc = run / "encoder"
    enc.mkdir()
    (enc / "manifest.json").write_text(json.dumps({"model": "org/enc", "backend": "embed", "kind": "embed",
                                                   "status": "complete"}))
    np.save(enc / "embeddings.npy", np.zeros((5, 4), dtype=np.float32))
    (run / "report.html").write_text("<html></html>")  # earlier report output is not a model
    return run


def test_accuracy_counts_no_answer_apart_from_wrong(run_dir):
    m = compute_metrics(load_run(run_dir), similarity_encoder=None, bootstrap=500)
    by = {x["model_dir"]: x for x in m["models"]}
    assert [x["model_dir"] for x in m["models"]] == ["beta", "alpha", "encoder", "ll"]
    alpha = by["alpha"]["mc"]
    # q1 A right, q2 no right, q3 C right, q4 "I cannot say." -> no answer.
    assert (alpha["n"], alpha["correct"], alpha["wrong"], alpha["no_answer"]) == (4, 3, 0, 1)
    assert alpha["accuracy"] == 0.75
    assert alpha["ci_low"] <= 0.75 <= alpha["ci_high"]
    beta = by["beta"]
    # q4 failed: it is an error, not part of the accuracy.
    assert (beta["mc"]["n"], beta["mc"]["correct"], beta["mc"]["wrong"]) == (3, 1, 2)
    assert (beta["answered"], beta["errors"]) == (4, 1)
    assert by["encoder"]["mc"] is None and by["encoder"]["scoring"] == "embed"


def test_loglikelihood_models_get_acc_and_acc_norm(run_dir):
    m = compute_metrics(load_run(run_dir), similarity_encoder=None, bootstrap=0)
    ll = next(x for x in m["models"] if x["model_dir"] == "ll")
    assert ll["scoring"] == "loglikelihood"
    # acc: A, B, B, B against gold A, B, C, A -> 2 of 4.
    assert (ll["mc"]["correct"], ll["mc"]["no_answer"]) == (2, 0)
    # acc_norm divides by the option's length: A, C, C, A (q3: -1.9/5 for "maybe" beats -1.5/2).
    assert ll["mc_norm"]["correct"] == 3
    assert ll["mc"]["ci_low"] is None  # no resampling asked for
    assert ll["answer_words"] is None and ll["rouge_l"] is None


def test_latency_tokens_and_reference_scores(run_dir):
    m = compute_metrics(load_run(run_dir), similarity_encoder=None, bootstrap=0)
    alpha = next(x for x in m["models"] if x["model_dir"] == "alpha")
    assert alpha["latency_s"]["mean"] == pytest.approx(np.mean([0.5, 1.0, 1.5, 2.0, 2.5]))
    assert alpha["output_tokens"]["total"] == 150
    assert alpha["answer_words"]["p50"] == 3  # 1, 2, 3, 4, 9 words
    assert 0 < alpha["rouge_l"] <= 1
    item5 = m["items"][4]["answers"]["alpha"]
    assert item5["rouge_l"] > m["items"][4]["answers"]["beta"]["rouge_l"]
    assert m["agreement"] is None and m["models"][0]["similarity"] is None


def test_pairs_compare_models_on_the_same_items(run_dir):
    m = compute_metrics(load_run(run_dir), similarity_encoder=None, bootstrap=500)
    pair = next(p for p in m["pairs"] if {p["a"], p["b"]} == {"alpha", "beta"})
    assert pair["n"] == 3  # q4 failed for beta
    a_only = pair["a_only_correct"] if pair["a"] == "alpha" else pair["b_only_correct"]
    assert a_only == 2  # q2 and q3; only beta failed q4, so it is left out
    assert 0 < pair["mcnemar_p"] <= 1
    # Three shared questions are too few to call a difference real or not.
    assert pair["verdict"] == "too few items" and pair["significant"] is None
    rouge = [p for p in m["score_pairs"] if p["metric"] == "rouge_l"]
    assert len(rouge) == 1 and rouge[0]["n"] == 3 and rouge[0]["verdict"] == "too few items"


def test_items_carry_every_answer_side_by_side(run_dir):
    m = compute_metrics(load_run(run_dir), similarity_encoder=None, bootstrap=0)
    item = m["items"][3]
    assert (item["id"], item["gold"], item["options"]) == ("q4", "A", {"A": "yes", "B": "no", "C": "maybe"})
    assert item["answers"]["alpha"]["choice"] is None and item["answers"]["alpha"]["correct"] is None
    assert item["answers"]["beta"]["error"] == "timed out"
    assert item["answers"]["ll"]["choice"] == "B" and item["answers"]["ll"]["correct"] is False
    assert "encoder" not in item["answers"]
    assert m["run"]["system_prompts"]["alpha"] == "Be brief."
    json.dumps(m, allow_nan=False)  # the report stores it as JSON


def test_metrics_table_has_one_flat_row_per_model(run_dir):
    rows = metrics_table_rows(compute_metrics(load_run(run_dir), similarity_encoder=None, bootstrap=0))
    assert [r["model_dir"] for r in rows] == ["beta", "alpha", "encoder", "ll"]
    alpha = rows[1]
    assert alpha["mc_accuracy"] == 0.75 and alpha["mc_no_answer"] == 1
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(alpha))
    writer.writeheader()
    writer.writerows(rows)
    assert all(not isinstance(v, dict | list) for v in alpha.values())


def test_similarity_to_references_with_minilm(run_dir):
    m = compute_metrics(load_run(run_dir), similarity_encoder="minilm", bootstrap=200)
    alpha = next(x for x in m["models"] if x["model_dir"] == "alpha")
    five = m["items"][4]["answers"]
    # The near-verbatim answer is far closer to the reference than "A drug.".
    assert five["alpha"]["similarity"] > five["beta"]["similarity"] + 0.2
    assert -1 <= alpha["similarity"] <= 1
    ag = m["agreement"]
    assert ag["models"] == ["beta", "alpha"]
    assert ag["matrix"][0][0] == 1.0 and math.isclose(ag["matrix"][0][1], ag["matrix"][1][0])
    assert any(p["metric"] == "similarity" for p in m["score_pairs"])


def test_a_folder_that_is_not_a_run_is_refused(tmp_path):
    with pytest.raises(InputError, match="not a run folder"):
        load_run(tmp_path)
    with pytest.raises(InputError, match="no such folder"):
        load_run(tmp_path / "missing")
    with pytest.raises(InputError, match="not an encoder of this run"):
        (tmp_path / "questions.jsonl").write_text('{"question": "q?"}\n')
        compute_metrics(load_run(tmp_path), similarity_encoder="biobert")


def test_a_run_still_going_is_scored_from_its_records(run_dir):
    """A killed or running model has records but no (or an older) responses.jsonl: records win."""
    folder = run_dir / "alpha"
    (folder / "responses.jsonl").unlink()
    (folder / "records").mkdir()
    rec = {"id": "q2", "index": 2, "prompt": "p", "response": "Final answer: B"}
    (folder / "records" / "000002.json").write_text(json.dumps(rec))
    (folder / "records" / "000003.json").write_text('{"id": "q3", "index": 3, "pro')  # torn write
    run = load_run(run_dir)
    alpha = next(m for m in run.models if m.model_dir == "alpha")
    assert set(alpha.records) == {2}
    assert alpha.records[2]["response"] == "Final answer: B"


def test_rouge_l_is_rouge_scores_own_number():
    """The faster ROUGE-L (stems once per word, bit-parallel LCS) gives rouge-score's F1 exactly."""
    from rouge_score import rouge_scorer

    from launcher.scoring import rouge

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    texts = [q["reference"] for q in QUESTIONS if q.get("reference")] + [
        "Yes. Tamoxifen, a selective oestrogen-receptor modulator, reduced recurrence in the trial.",
        "The answer is (B): no benefit was shown; patients' outcomes were similar\u2028across arms.",
        "running runs ran runner the the the a a", "12 mg/kg vs. 15 mg/kg [/] </script>", "!!!", "",
    ]
    for prediction in texts:
        for reference in texts:
            want = None
            if prediction and reference:
                want = float(scorer.score(reference, prediction)["rougeL"].fmeasure)
            assert rouge.rouge_l(prediction, reference) == want, (prediction, reference)
    rng = np.random.default_rng(0)
    words = ["trial", "tumour", "dose", "risk", "a", "the", "survival"]
    for _ in range(200):
        a = " ".join(rng.choice(words, rng.integers(1, 300)))
        b = " ".join(rng.choice(words, rng.integers(1, 300)))
        assert rouge.rouge_l(a, b) == float(scorer.score(b, a)["rougeL"].fmeasure)


def test_scores_are_the_same_whether_computed_or_read_from_the_runs_cache(run_dir):
    first = compute_metrics(load_run(run_dir), similarity_encoder=None, bootstrap=0)
    assert (run_dir / ".cache" / "rouge-l").is_dir()
    second = compute_metrics(load_run(run_dir), similarity_encoder=None, bootstrap=0)
    assert second == first
    # The cache folder is not mistaken for a model.
    assert [m["model_dir"] for m in second["models"]] == ["beta", "alpha", "encoder", "ll"]
