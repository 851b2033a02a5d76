"""`launcher report DIR`: one self-contained page plus metrics.csv and metrics.json.

The run folders are synthetic (tests/report_fixtures.py) but laid out exactly as a real run
leaves them, so the report reads them through the same loading and scoring code.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli
from tests.report_fixtures import (
    HOSTILE,
    SYSTEM_PROMPT,
    benchmark_source,
    page_data,
    tiny_models,
    tiny_questions,
    tiny_run,
    write_run,
)

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "artifacts"


def _report(run: Path, out: Path | None = None, *extra: str) -> Path:
    args = ["report", str(run), *(["-o", str(out)] if out else []), *extra]
    assert run_cli(*args) == 0
    return (out or run) / "report.html"


@pytest.fixture
def run_dir(tmp_path) -> Path:
    return tiny_run(tmp_path / "results")


def test_report_writes_the_page_and_the_metrics_next_to_the_run(run_dir):
    page = _report(run_dir, None, "--encoder", "none")

    assert page.exists()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    by_model = {m["model_dir"]: m for m in metrics["models"]}
    assert set(by_model) == {"good-model", "weak-model", "flaky-model"}
    good, weak, flaky = (by_model[m]["mc"] for m in ("good-model", "weak-model", "flaky-model"))
    assert (good["correct"], good["wrong"], good["no_answer"]) == (3, 0, 0)
    assert (weak["correct"], weak["wrong"], weak["no_answer"]) == (1, 1, 1)
    assert (flaky["correct"], flaky["wrong"]) == (1, 1)
    assert good["accuracy"] == 1.0
    assert weak["accuracy"] == pytest.approx(1 / 3)

    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert sorted(r["model_dir"] for r in rows) == ["flaky-model", "good-model", "weak-model"]

    html = page.read_text()
    # The run: models, the system prompt and the settings each model ran with.
    assert "org/flaky-model" in html and SYSTEM_PROMPT in html
    assert "max_new_tokens" in html
    # Every question, with every model's answer and its verdict.
    for qid in ("q-aspirin", "q-her2", "q-bcg", "q-free"):
        assert qid in html
    assert "B ✓ correct" in html and "no answer" in html and "RateLimitError: 429" in html
    data = page_data(html)
    assert data["models"] == ["good-model", "weak-model", "flaky-model"]
    assert [len([a for a in it["a"] if a]) for it in data["items"]] == [3, 3, 3, 3]
    # Three questions shared are too few for a verdict on any pair.
    assert "too few items" in html and "real difference" not in html
    # Charts are inline SVG.
    assert 'id="chart-mc"' in html and 'id="chart-latency"' in html and 'id="chart-length"' in html


def test_report_goes_to_another_folder_with_o(run_dir, tmp_path):
    out = tmp_path / "site"
    _report(run_dir, out, "--encoder", "none")
    assert sorted(p.name for p in out.iterdir()) == ["metrics.csv", "metrics.json", "report.html"]
    assert not (run_dir / "report.html").exists()


def test_the_report_names_the_benchmark_and_split_the_questions_came_from(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps to the terminal
    questions = tiny_questions()
    run = write_run(tmp_path, questions, tiny_models(), questions_source=benchmark_source(questions))
    named = "MedQA (USMLE, 4 options) — test split, 4 of 1,273 questions (seed 0), revision 17af935"

    html = _report(run, None, "--encoder", "none").read_text()

    assert f'<div id="questions-source">{named}</div>' in html  # the page's run header
    block = json.loads((run / "metrics.json").read_text())["run"]
    assert block["questions_label"] == named
    assert block["questions_source"]["benchmark"] == "medqa" and block["questions_source"]["seed"] == 0
    assert f"questions: {named}" in capsys.readouterr().out  # and the terminal's summary


@pytest.mark.parametrize(("changes", "named"), [
    ({"limit": None, "seed": None, "rows_in_split": 4},
     "MedQA (USMLE, 4 options) — test split, all 4 questions, revision 17af935"),
    ({"seed": None},
     "MedQA (USMLE, 4 options) — test split, the first 4 of 1,273 questions, revision 17af935"),
    ({"benchmark": "mmlu", "title": "MMLU, medical subjects", "subject": "anatomy", "rows_in_split": 135,
      "revision": "c30699e8356da336a370243923dbaf21066bb9fe", "seed": 7},
     "MMLU, medical subjects: anatomy — test split, 4 of 135 questions (seed 7), revision c30699e"),
    ({"source": "local", "revision": None, "files_sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b"},
     "MedQA (USMLE, 4 options) — test split, 4 of 1,273 questions (seed 0), "
     "local copy, files sha256 9f86d08"),
])
def test_the_benchmark_line_says_which_sample_and_which_data(tmp_path, changes, named):
    questions = tiny_questions()
    source = benchmark_source(questions, **changes)
    run = write_run(tmp_path, questions, tiny_models(), questions_source=source)

    html = _report(run, None, "--encoder", "none").read_text()

    assert json.loads((run / "metrics.json").read_text())["run"]["questions_label"] == named
    assert named in html


def test_a_questions_file_names_no_benchmark(run_dir):
    html = _report(run_dir, None, "--encoder", "none").read_text()

    block = json.loads((run_dir / "metrics.json").read_text())["run"]
    assert block["questions_source"] is None and block["questions_label"] is None
    assert 'id="questions-source"' not in html


def test_answers_are_shown_as_text_never_as_markup(run_dir):
    html = _report(run_dir, None, "--encoder", "none").read_text()

    assert "window.__pwned" in html  # the hostile answer is on the page...
    assert "<script>window.__pwned" not in html  # ...but only escaped, as inert JSON data
    assert "\\u003cscript\\u003ewindow.__pwned = 1\\u003c/script\\u003e" in html
    assert '<img src=x onerror' not in html and "</pre></div>" not in html
    # Ours, and no other: the data element (never run) and the page's script.
    assert re.findall(r"<script\b[^>]*>", html) == [
        '<script type="application/json" id="report-data" data-encoding="json">', "<script>"]
    hostile = next(it for it in page_data(html)["items"] if it["id"] == "q-free")["a"][1]
    assert hostile[2] == HOSTILE


def test_the_page_needs_no_network(run_dir):
    html = _report(run_dir, None, "--encoder", "none").read_text()

    assert not re.search(r"<(script|img|iframe|link|object|embed)\b[^>]*\b(src|href)\s*=", html, re.I)
    assert "@import" not in html and "url(" not in html
    # The only absolute URL is the SVG namespace, which no browser fetches.
    assert set(re.findall(r"https?://[^\s\"'<>]+", html)) <= {"http://www.w3.org/2000/svg"}


def test_not_a_run_folder_is_bad_input_and_writes_nothing(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_cli("report", empty, "--encoder", "none") == 2
    assert list(empty.iterdir()) == []
    assert run_cli("report", tmp_path / "missing") == 2
    assert "no such run folder" in capsys.readouterr().err


# --- the page in a real browser ---------------------------------------------------------------


def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)


@pytest.fixture(scope="module")
def browser_report(tmp_path_factory) -> Path:
    """One report with the default MiniLM similarity, as a user gets it."""
    if not CHROMIUM.exists():
        pytest.skip("headless Chromium not installed (/usr/bin/chromium; apt-get install -y chromium)")
    run = tiny_run(tmp_path_factory.mktemp("browser") / "results")
    return _report(run)


def _dom(page: Path, profile: Path, fragment: str = "") -> str:
    """The DOM after the page's script ran (``fragment`` pre-sets the search and filters)."""
    url = page.resolve().as_uri() + (f"#{fragment}" if fragment else "")
    return _chromium("--virtual-time-budget=3000", "--dump-dom", url, profile=profile).stdout


def _visible_questions(dom: str) -> list[str]:
    return re.findall(r'<article class="q" id="q-(\d+)"', dom)


def _option_value(html: str, model_dir: str) -> str:
    m = re.search(rf'<option value="(\d+)">{re.escape(model_dir)}</option>', html)
    assert m, f"no filter option for {model_dir}"
    return m.group(1)


@pytest.mark.slow
def test_the_page_in_headless_chromium(browser_report, tmp_path):
    html = browser_report.read_text()
    dom = _dom(browser_report, tmp_path / "p1")

    assert "4 of 4 questions" in dom
    assert len(_visible_questions(dom)) == 4
    assert "Multiple-choice accuracy" in dom and "<svg" in dom
    # Untrusted answers stayed text in the live DOM: no element was made from them.
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in dom
    assert '<img src="x"' not in dom and "<b>bold?</b>" not in dom

    weak = _option_value(html, "weak-model")
    wrong = _dom(browser_report, tmp_path / "p2", f"status=wrong&model={weak}")
    assert "1 of 4 questions" in wrong
    assert _visible_questions(wrong) == ["1"]  # weak-model's only wrong answer: aspirin

    found = _dom(browser_report, tmp_path / "p3", "search=trastuzumab")
    assert "1 of 4 questions" in found
    assert _visible_questions(found) == ["2"]

    unanswered = _dom(browser_report, tmp_path / "p4", "status=noanswer")
    assert "1 of 4 questions" in unanswered  # weak-model on HER2

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    _chromium(f"--screenshot={shot}", "--window-size=1280,2000", "--hide-scrollbars",
              browser_report.resolve().as_uri(), profile=tmp_path / "p5")
    assert shot.exists() and shot.stat().st_size > 10_000
    shutil.copy(browser_report, ARTIFACTS / "report.html")

