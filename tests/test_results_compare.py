"""`launcher compare`: a leaderboard over runs, paired tests on shared questions, what changed.

A team reruns its panel: is the new model better than last month's, which answers flipped,
what does a correct answer cost. The runs are synthetic, in the real layout.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest

from launcher.scoring.metrics import compute_metrics
from launcher.scoring.run_data import load_run
from runner.questions import Question, parse_questions
from tests.conftest import run_cli
from tests.report_fixtures import HOSTILE, FakeModel, benchmark_source, tiny_models, tiny_questions, write_run


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDBENCH_CACHE", str(tmp_path / "cache"))


def mc_questions(n: int, start: int = 0) -> list[Question]:
    """``n`` four-option questions (ids q<start>...), gold cycling through A-D."""
    options = ["tamoxifen", "letrozole", "surgery", "observation"]
    lines = [json.dumps({"id": f"q{i}", "question": f"Which treatment suits case {i}?", "options": options,
                         "answer": "ABCD"[i % 4]}) for i in range(start, start + n)]
    return parse_questions(lines, "mc.jsonl")


def skilled(model_dir: str, right: set[str], *, price: float | None = None) -> FakeModel:
    """A model right on the question ids in ``right`` and wrong (the next letter) elsewhere."""
    def answer(q: Question) -> str:
        gold = q.gold_letter or "A"
        pick = gold if q.id in right else "ABCD"[("ABCD".index(gold) + 1) % 4]
        return f"Answer: {pick}. {q.options[pick]}\nBecause the evidence says so."
    return FakeModel(model_dir, f"org/{model_dir}", backend="openai" if price else "echo", answer=answer)


def compare_json(*args) -> dict:
    import contextlib

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert run_cli("compare", *args, "--json") == 0
    return json.loads(out.getvalue())


@pytest.fixture
def months(tmp_path) -> Path:
    """Last month's run and this month's: the same 40 questions; medgemma gets a new revision."""
    root = tmp_path / "results"
    qs = mc_questions(40)
    ids = [q.id for q in qs]
    old = [skilled("medgemma", set(ids[:24])), skilled("gpt-4o", set(ids[:30]))]
    new = [skilled("medgemma", set(ids[:20]) | set(ids[24:36])), skilled("gpt-4o", set(ids[:30]))]
    write_run(root, qs, old, run_id="panel-2025-01", questions_source=benchmark_source(qs))
    run = write_run(root, qs, new, run_id="panel-2025-02", questions_source=benchmark_source(qs))
    # The new release: another revision in this month's manifest.
    manifest = json.loads((run / "medgemma" / "manifest.json").read_text())
    (run / "medgemma" / "manifest.json").write_text(json.dumps({**manifest, "revision": "new-release"}))
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "created_at": "2025-02-02T03:04:05+00:00"}))
    return root


def test_the_leaderboard_of_one_run_says_what_its_report_says(tmp_path):
    qs = mc_questions(40)
    ids = [q.id for q in qs]
    models = [skilled("a", set(ids[:33])), skilled("b", set(ids[5:25]))]
    run = write_run(tmp_path / "r", qs, models, run_id="one")
    report = compute_metrics(load_run(run), similarity_encoder=None, bootstrap=1000)
    result = compare_json(run)
    for m in report["models"]:
        row = next(r for r in result["leaderboard"] if r["model_dir"] == m["model_dir"])
        cell = row["cells"]["file:questions.jsonl"]
        assert (cell["n"], cell["correct"]) == (m["mc"]["n"], m["mc"]["correct"])
        assert (cell["ci_low"], cell["ci_high"]) == (m["mc"]["ci_low"], m["mc"]["ci_high"])
    [pair], [expected] = result["pairs"], report["pairs"]
    assert (pair["a"], pair["b"]) == (expected["a"], expected["b"])
    for key in ("n", "a_only_correct", "b_only_correct", "mcnemar_p", "diff", "diff_ci_low",
                "diff_ci_high", "verdict"):
        assert pair[key] == expected[key], key


def test_is_the_new_release_better_than_last_months(months, capsys):
    result = compare_json(months, "--model", "medgemma")
    labels = [r["label"] for r in result["leaderboard"]]
    assert sorted(labels) == ["medgemma", "medgemma @new-release"]
    new, old = (next(r for r in result["leaderboard"] if r["label"] == name)
                for name in ("medgemma @new-release", "medgemma"))
    assert new["cells"]["medqa"]["accuracy"] == 32 / 40 and old["cells"]["medqa"]["accuracy"] == 24 / 40
    [pair] = result["pairs"]
    assert (pair["a"], pair["b"], pair["n"]) == ("medgemma @new-release", "medgemma", 40)
    assert (pair["a_only_correct"], pair["b_only_correct"]) == (12, 4)
    assert pair["diff"] == pytest.approx(0.2)

    assert run_cli("compare", months, "--model", "medgemma") == 0
    out = capsys.readouterr().out
    assert "medgemma @new-release" in out and "80.0%" in out and "60.0%" in out


def test_two_runs_show_the_answers_that_flipped_side_by_side(months, capsys):
    result = compare_json(months / "panel-2025-01", months / "panel-2025-02")
    assert result["shared"] == {"a": "panel-2025-01", "b": "panel-2025-02", "a_questions": 40,
                                "b_questions": 40, "questions": 40, "prompts": 40, "match": "prompt"}
    flips = {f["model_dir"]: f for f in result["flips"]}
    assert flips["gpt-4o"]["flipped"] == 0
    med = flips["medgemma"]
    assert (med["n"], med["flipped"], med["right_to_wrong"], med["wrong_to_right"]) == (40, 16, 4, 12)
    first = med["items"][0]
    assert first["question_id"] == "q20"
    assert (first["a"]["outcome"], first["b"]["outcome"]) == ("correct", "wrong")
    assert first["a"]["answer"].startswith("Answer: A") and first["b"]["answer"].startswith("Answer: B")

    assert run_cli("compare", months / "panel-2025-01", months / "panel-2025-02", "--flips", "2") == 0
    out = capsys.readouterr().out
    assert "16 of 40 shared answers flipped (4 right → wrong, 12 wrong → right)" in out
    assert "panel-2025-01: A correct: Answer: A. tamoxifen" in out
    assert "… 14 more" in out


def test_only_shared_questions_are_paired_and_the_statement_says_so(tmp_path, capsys):
    root = tmp_path / "results"
    a = mc_questions(30)
    b = mc_questions(30, start=10)  # q10..q39: 20 shared with a (same text, options and gold)
    write_run(root, a, [skilled("m", {q.id for q in a})], run_id="run-a")
    write_run(root, b, [skilled("m", set())], run_id="run-b")
    result = compare_json(root)
    shared = result["shared"]
    assert (shared["a_questions"], shared["b_questions"], shared["questions"]) == (30, 30, 20)
    [flip] = result["flips"]
    assert (flip["n"], flip["flipped"]) == (20, 20)  # only the shared 20, though each run has 30
    assert run_cli("compare", root) == 0
    assert ("run-a has 30 questions, run-b 30; they share 20: paired tests and flips use only the shared "
            "ones") in capsys.readouterr().out


def test_runs_without_a_shared_question_are_bad_input(tmp_path, capsys):
    root = tmp_path / "results"
    write_run(root, mc_questions(5), [skilled("m", set())], run_id="run-a")
    write_run(root, mc_questions(5, start=100), [skilled("m", set())], run_id="run-b")
    assert run_cli("compare", root) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: runs run-a and run-b share no question (5 and 5 questions, none the same): "
                   "nothing to pair"]


def test_other_system_prompts_pair_only_on_the_question_when_asked(months, capsys):
    run = months / "panel-2025-02"
    info = json.loads((run / "run.json").read_text())
    info["system_prompts"] = {k: "Answer like a pharmacist." for k in info["system_prompts"]}
    (run / "run.json").write_text(json.dumps(info))
    assert run_cli("compare", months) == 2
    assert "share 40 questions but no prompt" in capsys.readouterr().err
    result = compare_json(months, "--match", "question")
    assert {f["model_dir"]: f["flipped"] for f in result["flips"]} == {"medgemma": 16, "gpt-4o": 0}


def test_cost_per_correct_answer(tmp_path):
    qs = mc_questions(20)
    ids = {q.id for q in qs}
    run = write_run(tmp_path / "r", qs, [skilled("api", set(list(ids)[:10]), price=0.01)], run_id="priced")
    # The runner records each answer's cost for API models with prices.
    lines = [json.loads(line) for line in (run / "api" / "responses.jsonl").read_text().splitlines()]
    priced = "".join(json.dumps({**r, "cost_usd": 0.01}) + "\n" for r in lines)
    (run / "api" / "responses.jsonl").write_text(priced)
    [row] = compare_json(run)["leaderboard"]
    cell = row["cells"]["file:questions.jsonl"]
    assert cell["cost_usd"] == pytest.approx(0.2) and cell["cost_per_correct"] == pytest.approx(0.02)


def hostile_flip(months: Path) -> None:
    """This month's gpt-4o answers its first question with markup and script, and another option."""
    run = months / "panel-2025-02" / "gpt-4o"
    lines = [json.loads(line) for line in (run / "responses.jsonl").read_text().splitlines()]
    lines[0]["response"] = HOSTILE + " Answer: B"
    (run / "responses.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))


def test_csv_json_and_a_self_contained_html_page(months, tmp_path, capsys):
    hostile_flip(months)  # the page shows it as text
    page = tmp_path / "board" / "leaderboard.html"
    page.parent.mkdir()
    two = (months / "panel-2025-01", months / "panel-2025-02")
    assert run_cli("compare", *two, "--csv", "--html", page) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert {r["model"] for r in rows} == {"gpt-4o", "medgemma", "medgemma @new-release"}
    assert {r["benchmark"] for r in rows} == {"medqa"}
    html = page.read_text(encoding="utf-8")
    assert "<script" not in html.replace("&lt;script", "")  # no script of ours, none of the answers'
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in html
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html) and "@import" not in html
    assert 'id="leaderboard-table"' in html and 'id="pairs-table"' in html and 'id="flips"' in html
    assert "var(--okbg)" in html  # the report's stylesheet


@pytest.mark.slow
def test_the_leaderboard_opens_offline_in_headless_chromium(months, tmp_path, capsys):
    from tests.cdp import CHROMIUM, Chromium

    if not CHROMIUM.exists():
        pytest.skip("headless Chromium not installed (/usr/bin/chromium; apt-get install -y chromium)")
    hostile_flip(months)
    page = tmp_path / "leaderboard.html"
    assert run_cli("compare", months / "panel-2025-01", months / "panel-2025-02", "--html", page) == 0
    capsys.readouterr()

    with Chromium(tmp_path / "profile") as b:
        b.open(page.resolve().as_uri())
        rows = b.eval("[...document.querySelectorAll('#leaderboard-table tr[data-model-key]')]"
                      ".map(r => r.cells[1].textContent.trim())")
        assert sorted(rows) == ["gpt-4o", "medgemma", "medgemma @new-release"]
        assert b.eval("document.querySelectorAll('#pairs-table tr').length") > 1
        assert b.eval("document.querySelectorAll('#flips article.q').length") > 0
        # The hostile answer is text in the live page: its script never ran, its markup made nothing.
        assert b.eval("window.__pwned === undefined")
        assert b.eval("document.querySelectorAll('#flips img, #flips script, #flips b').length") == 0
        assert "<script>window.__pwned = 1</script>" in b.eval("document.getElementById('flips').textContent")
        # The report's stylesheet applies: a table is laid out, not raw text.
        table = "document.querySelector('#leaderboard-table')"
        assert b.eval(f"getComputedStyle({table}).borderCollapse") == "collapse"
        shot = tmp_path / "leaderboard.png"
        b.screenshot(shot)
        assert shot.stat().st_size > 10_000


def test_a_partial_run_is_labelled(months, capsys):
    folder = months / "panel-2025-02" / "gpt-4o"
    (folder / "responses.jsonl").unlink()
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "status": "running"}))
    assert run_cli("compare", months) == 0
    out = capsys.readouterr().out
    assert "panel-2025-02" in out and "(partial: a model still running or not started)" in out


def test_an_unknown_benchmark_names_those_there_are(months, capsys):
    assert run_cli("compare", months, "--benchmark", "mmlu") == 2
    assert capsys.readouterr().err.strip() == "error: --benchmark mmlu: not in these runs; they hold: medqa"


def test_tiny_panel_runs_compare_without_error(tmp_path):
    root = tmp_path / "results"
    write_run(root, tiny_questions(), tiny_models(), run_id="t1")
    result = compare_json(root)
    assert [r["label"] for r in result["leaderboard"]] == ["good-model", "flaky-model", "weak-model"]
