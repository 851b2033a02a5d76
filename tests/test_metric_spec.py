"""The metric spec: one entry in ``metric_spec.METRICS`` reaches metrics.json, metrics.csv and the
report page, and a metric with no value says why instead of a bare "–"."""

from __future__ import annotations

import csv
import html as html_lib
import json
import re
from pathlib import Path

import numpy as np
import pytest

from launcher.report import build_report
from launcher.scoring import metric_spec, rouge
from launcher.scoring.metric_spec import Cell, Chart, Mean, Metric, num
from tests.report_fixtures import tiny_run

DOCS = Path(__file__).resolve().parents[1] / "docs" / "report.md"

# A throwaway metric, known only to this test: the share of answers of three words or fewer.
SHORT = Metric(
    name="short_share", label="short answers", description="answers of three words or fewer",
    compute=lambda a: (a.words[a.ok & ~np.isnan(a.words)] <= 3).astype(np.float64), aggregate=Mean(),
    higher_is_better=None, cells=(Cell("short answers", lambda v, m: num(v, 2)),),
    scorings=frozenset({"generate"}), missing="no answer has text",
    chart=Chart(id="chart-short", title="Short answers", axis="share", legend="",
                text=lambda v: f"{v:.2f}", x_max=1.0),
)


def _table(page: str) -> list[list[tuple[str, str | None]]]:
    """The metrics table as rows of (cell text, its tooltip)."""
    table = re.search(r'<table id="metrics-table">(.*?)</table>', page, re.S)
    assert table, "the page has no metrics table"
    rows = []
    for row in re.findall(r"<tr.*?</tr>", table.group(1), re.S):
        cells = re.findall(r'<t[hd]([^>]*)>(.*?)</t[hd]>', row, re.S)
        rows.append([(html_lib.unescape(text.strip()),
                      html_lib.unescape(t.group(1)) if (t := re.search(r'title="([^"]*)"', attrs)) else None)
                     for attrs, text in cells])
    return rows


def _report(run: Path, out: Path) -> tuple[dict, list[dict], str]:
    build_report(run, out, encoder=None, bootstrap=0)
    metrics = json.loads((out / "metrics.json").read_text())
    with (out / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    return metrics, rows, (out / "report.html").read_text()


def test_a_metric_added_to_the_spec_alone_reaches_every_output(tmp_path, monkeypatch):
    monkeypatch.setattr(metric_spec, "METRICS", (*metric_spec.METRICS, SHORT))
    metrics, rows, page = _report(tiny_run(tmp_path / "results"), tmp_path / "out")

    # weak-model's answers: "Answer: B. no", "I am not sure ...", "Answer: A", a long hostile text.
    weak = next(m for m in metrics["models"] if m["model_dir"] == "weak-model")
    assert weak["short_share"] == pytest.approx(0.5)
    csv_weak = next(r for r in rows if r["model_dir"] == "weak-model")
    assert list(csv_weak)[-1] == "short_share" and float(csv_weak["short_share"]) == pytest.approx(0.5)

    table = _table(page)
    assert table[0][-1] == ("short answers", "answers of three words or fewer")
    weak_row = next(r for r in table if r[0][0] == "weak-model")
    assert weak_row[-1] == ("0.50", None)
    assert 'id="chart-short"' in page


def test_an_empty_cell_says_why(tmp_path, monkeypatch):
    # No ROUGE-L scorer, no encoder, no prices, generate models only: four metrics have no value.
    monkeypatch.setattr(rouge, "available", lambda: False)
    metrics, rows, page = _report(tiny_run(tmp_path / "results"), tmp_path / "out")

    for model in metrics["models"]:
        empty = {m.name for m in metric_spec.METRICS if model[m.name] is None}
        assert set(model["missing"]) == empty
    good = metrics["models"][0]
    assert good["missing"] == {
        "mc_norm": "acc_norm: does not apply to scoring: generate models",
        "rouge_l": "ROUGE-L: not computed: rouge-score is not installed",
        "similarity": "similarity: not computed (--encoder none)",
        "cost_usd": "cost (USD): no answer recorded a cost (no prices set)",
    }
    empty_cells = [cell for row in _table(page)[1:] for cell in row if cell[0] == "–"]
    assert len(empty_cells) == 3 * 4
    assert all(why for _, why in empty_cells), "an empty cell without a reason"
    assert ("–", "similarity: not computed (--encoder none)") in empty_cells


def test_docs_show_the_metrics_table_the_spec_makes():
    assert metric_spec.markdown() in DOCS.read_text(encoding="utf-8"), \
        "docs/report.md is stale: paste `python -m launcher.scoring.metric_spec` over its metrics table"
