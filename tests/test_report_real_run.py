"""The report on a real run: SmolLM2 generative and log-likelihood on shared PubMedQA items."""

from __future__ import annotations

import json

import yaml

from tests.conftest import REPO, run_cli, write


def test_report_shows_accuracy_with_intervals_for_both_scorings(project, pubmedqa):
    items = pubmedqa.read_text().splitlines()[:4]
    write(project / "pubmedqa.jsonl", "\n".join(items) + "\n")
    cfg = yaml.safe_load((REPO / "examples" / "pubmedqa-smollm2.yaml").read_text())
    cfg["questions"] = "pubmedqa.jsonl"
    cfg["generation"]["max_new_tokens"] = 8
    write(project / "models.yaml", yaml.safe_dump(cfg))
    assert run_cli("run", "models.yaml") == 0
    (run,) = list((project / "results").iterdir())
    assert run_cli("report", run, "--encoder", "none", "--bootstrap", "200") == 0
    metrics = json.loads((run / "metrics.json").read_text())
    by_dir = {m["model_dir"]: m for m in metrics["models"]}
    gen = by_dir["HuggingFaceTB_SmolLM2-135M-Instruct"]
    ll = by_dir["SmolLM2-135M-Instruct-loglik"]
    assert ll["scoring"] == "loglikelihood" and gen["scoring"] == "generate"
    for m in (gen, ll):
        mc = m["mc"]
        assert mc["n"] == 4 and mc["correct"] + mc["wrong"] + mc["no_answer"] == 4
        assert mc["ci_low"] <= mc["accuracy"] <= mc["ci_high"]
    assert ll["mc"]["no_answer"] == 0 and ll["mc_norm"] is not None
    html = (run / "report.html").read_text()
    assert "SmolLM2-135M-Instruct-loglik" in html and "<svg" in html
