"""The report at scale: embeddings kept in the run folder, records read once, the page at 20 x 1,000.

The big page is opened in headless Chromium driven over the DevTools protocol (tests/cdp.py)
rather than with ``chromium --dump-dom`` as tests/test_report.py does: a dump cannot type into
the search box or click, and typing is what this test is about.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from launcher.report.html import data_block
from launcher.report.html import page_data as build_page_data
from launcher.scoring.array_cache import MAX_SHARDS, ArrayCache, text_key
from launcher.scoring.metrics import compute_metrics
from launcher.scoring.run_data import load_run
from tests.cdp import CHROMIUM, Chromium
from tests.conftest import NO_PUBMEDQA, PUBMEDQA, REPO, run_cli
from tests.report_fixtures import (
    FakeModel,
    page_data,
    realistic_models,
    scaled_questions,
    tiny_questions,
    tiny_run,
    write_run,
)

ARTIFACTS = REPO / "artifacts"
# Text real answers hold that a page must carry intact and inert.
NEEDLE = "quokkaneedle"
ODD_ANSWER = (f"**Answer: B** the {NEEDLE} cohort\u2028second line\u2029next paragraph [/] done "
              "</script><script>window.__pwned = 1</script><!-- <img src=x onerror=\"window.__pwned=2\">")


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text(encoding="utf-8"))


# --- similarity: embeddings computed once per answer, kept in the run folder ------------------


@pytest.mark.slow
def test_a_second_report_embeds_nothing_and_a_changed_answer_is_embedded_again(tmp_path):
    run = tiny_run(tmp_path / "results")

    assert run_cli("report", run, "--bootstrap", "50") == 0
    first = _metrics(run)
    texts = first["similarity"]["texts"]
    assert first["similarity"] == {"encoder": "minilm", "texts": texts, "from_run": 0, "from_cache": 0,
                                   "embedded": texts}
    assert (run / ".cache" / "similarity").is_dir()

    assert run_cli("report", run, "--bootstrap", "50") == 0
    second = _metrics(run)
    assert second["similarity"] == {"encoder": "minilm", "texts": texts, "from_run": 0, "from_cache": texts,
                                    "embedded": 0}
    assert [m["similarity"] for m in second["models"]] == [m["similarity"] for m in first["models"]]
    assert second["agreement"] == first["agreement"]

    # The good model's free-text answer changes: that one text is embedded again.
    responses = run / "good-model" / "responses.jsonl"
    lines = responses.read_text(encoding="utf-8").splitlines()
    rec = json.loads(lines[3])
    rec["response"] = "A tumour marker is a protein measured in blood that tracks a cancer."
    lines[3] = json.dumps(rec)
    responses.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert run_cli("report", run, "--bootstrap", "50") == 0
    third = _metrics(run)
    assert third["similarity"]["embedded"] == 1
    assert third["items"][3]["answers"]["good-model"]["text"] == rec["response"]


@pytest.mark.slow
def test_vectors_of_one_encoder_are_never_read_for_another(tmp_path):
    run = tiny_run(tmp_path / "results")
    assert run_cli("report", run, "--bootstrap", "0") == 0
    assert run_cli("report", run, "--bootstrap", "0", "--encoder", "minilm-256") == 0
    wide = _metrics(run)
    assert wide["similarity"]["encoder"] == "minilm-256"
    assert wide["similarity"]["from_cache"] == 0  # the 128-token vectors are not its own
    folders = [p.name for p in (run / ".cache" / "similarity").iterdir()]
    assert len(folders) == 2 and sum(f.startswith("minilm-256-") for f in folders) == 1
    identities = [json.loads((run / ".cache" / "similarity" / f / "identity.json").read_text())
                  for f in folders]
    assert {i["max_length"] for i in identities} == {128, None}
    assert all(i["weights"] for i in identities)  # the weights files themselves are part of the key


def test_the_cache_keeps_each_identity_apart_and_survives_damage(tmp_path):
    a = ArrayCache(tmp_path, "similarity", "enc", {"encoder": "enc", "max_length": 128})
    keys = [text_key(t) for t in ("yes", "no", "maybe")]
    a.put(keys, np.eye(3, 4, dtype=np.float32))
    again = ArrayCache(tmp_path, "similarity", "enc", {"encoder": "enc", "max_length": 128})
    found = again.get(keys + [text_key("other")])
    assert set(found) == set(keys) and np.array_equal(found[keys[1]], np.eye(3, 4)[1])
    other = ArrayCache(tmp_path, "similarity", "enc", {"encoder": "enc", "max_length": 64})
    assert other.get(keys) == {} and other.folder != a.folder

    # A damaged shard, or one merged away by another report, is skipped: computed again.
    (a.folder / "0-garbage.npz").write_bytes(b"not a numpy file")
    assert set(ArrayCache(tmp_path, "similarity", "enc", a.identity).get(keys)) == set(keys)
    # identity.json that does not match: nothing in the folder is trusted.
    (a.folder / "identity.json").write_text(json.dumps({"encoder": "someone else"}))
    assert ArrayCache(tmp_path, "similarity", "enc", a.identity).get(keys) == {}


def test_reports_running_at_once_each_add_a_shard_and_merge_past_the_limit(tmp_path):
    ident = {"encoder": "enc"}
    writers = [ArrayCache(tmp_path, "similarity", "enc", ident) for _ in range(2)]
    for w in writers:
        w.get([])  # both read the (empty) folder before either writes, as two reports would
    writers[0].put([text_key("a")], np.ones((1, 2), dtype=np.float32))
    writers[1].put([text_key("b")], np.full((1, 2), 2, dtype=np.float32))
    assert len(list(writers[0].folder.glob("*.npz"))) == 2
    assert set(ArrayCache(tmp_path, "similarity", "enc", ident).get([text_key("a"), text_key("b")])) == {
        text_key("a"), text_key("b")}

    for i in range(MAX_SHARDS):
        c = ArrayCache(tmp_path, "similarity", "enc", ident)
        c.put([text_key(f"t{i}")], np.full((1, 2), i, dtype=np.float32))
    assert len(list(writers[0].folder.glob("*.npz"))) <= MAX_SHARDS
    every = [text_key(t) for t in ["a", "b", *(f"t{i}" for i in range(MAX_SHARDS))]]
    assert len(ArrayCache(tmp_path, "similarity", "enc", ident).get(every)) == len(every)


def test_a_run_folder_that_cannot_keep_a_cache_still_gets_its_report(tmp_path):
    run = tiny_run(tmp_path / "results")
    (run / ".cache").write_text("a file where the cache folder would go")
    assert run_cli("report", run, "--encoder", "none") == 0
    assert "not written" in " ".join(_metrics(run)["notes"])


# --- records: streamed once, the newest version of each --------------------------------------


def _record_line(run: Path, model: str, n: int) -> dict:
    for line in (run / model / "responses.jsonl").read_text(encoding="utf-8").split("\n"):
        if line and json.loads(line)["index"] == n:
            return json.loads(line)
    raise AssertionError(n)


def test_records_are_read_once_and_a_newer_record_file_wins(tmp_path):
    q = tiny_questions()
    run = write_run(tmp_path, q, [FakeModel("m", "m", answer=lambda x: f"Answer: A\u2028for {x.id}")],
                    records=True)
    records = run / "m" / "records"
    # Unchanged since responses.jsonl was assembled: the line is used, the file is not read.
    old = (records / "000001.json").stat()
    size = old.st_size
    (records / "000001.json").write_text("x" * size)
    os.utime(records / "000001.json", ns=(old.st_atime_ns, old.st_mtime_ns))
    # Answered again after the assembly (a run still going): the record file wins.
    newer = _record_line(run, "m", 2) | {"response": "Answer: B (second try)"}
    time.sleep(0.01)
    (records / "000002.json").write_text(json.dumps(newer))

    got = dict(load_run(run).models[0].iter_records())
    assert got[1]["response"] == "Answer: A\u2028for q-aspirin"  # U+2028 is not a line end
    assert got[2]["response"] == "Answer: B (second try)"
    assert sorted(got) == [1, 2, 3, 4]


# --- the page: every answer once, inert, compressed when large ---------------------------------


def test_the_page_data_is_inert_whatever_the_answers_hold(tmp_path):
    models = [FakeModel("odd", "odd", answer=lambda q: ODD_ANSWER)]
    run = write_run(tmp_path, tiny_questions(), models)
    metrics = compute_metrics(load_run(run), similarity_encoder=None, bootstrap=0)
    data = build_page_data(metrics["items"], ["odd"], [])
    for limit in (10**9, 0):  # plain JSON, then deflated
        encoding, body = data_block(data, compress_above=limit)
        assert encoding == ("json" if limit else "deflate-base64")
        for unsafe in ("</", "<!--", "<script", "\u2028", "\u2029"):
            assert unsafe not in body
        html = f'<script type="application/json" id="report-data" data-encoding="{encoding}">{body}</script>'
        assert page_data(html)["items"][0]["a"][0][2] == ODD_ANSWER


@pytest.fixture(scope="module")
def big_page(tmp_path_factory) -> tuple[Path, dict]:
    """20 models x 1,000 questions with answers as long as real ones; one answer is the needle."""
    if not PUBMEDQA.exists():
        pytest.skip(NO_PUBMEDQA)
    from runner.questions import load_questions

    questions = scaled_questions(load_questions(PUBMEDQA), 1000)
    models = realistic_models(20, questions)
    plain = models[7].answer
    models[7].answer = lambda q: ODD_ANSWER if q.index == 777 else plain(q)
    run = write_run(tmp_path_factory.mktemp("scale"), questions, models, name="scale", run_id="scale-20x1000")
    assert run_cli("report", run, "--encoder", "none", "--bootstrap", "100") == 0
    return run / "report.html", _metrics(run)


@pytest.mark.slow
def test_the_page_at_20_models_and_1000_questions_stays_small_and_holds_every_answer(big_page):
    page, metrics = big_page
    assert page.stat().st_size < 50_000_000
    html = page.read_text(encoding="utf-8")
    data = page_data(html)
    assert len(data["items"]) == 1000 and len(data["models"]) == 20
    assert sum(1 for it in data["items"] for a in it["a"] if a) == 20_000
    assert data["items"][776]["a"][7][2] == ODD_ANSWER
    assert html.count("window.__pwned") == 0  # compressed: not even as escaped text
    assert len(metrics["items"]) == 1000


@pytest.mark.slow
def test_the_big_page_in_a_browser_search_filter_and_pages(big_page, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip("headless Chromium not installed (/usr/bin/chromium; apt-get install -y chromium)")
    page, metrics = big_page
    wrong_7 = next(m for m in metrics["models"] if m["model_dir"] == "panel-07")["mc"]["wrong"]
    with Chromium(tmp_path / "profile") as b:
        b.open(page.resolve().as_uri())
        b.wait_for("document.body.dataset.ready")
        count = "document.getElementById('count').textContent"
        assert b.eval(count) == "1000 of 1000 questions"
        assert b.eval("document.querySelectorAll('article.q').length") == 25  # one page, not 1,000
        assert b.eval("document.querySelectorAll('article.q .ans').length") == 25 * 20
        assert b.eval("document.getElementById('page').textContent") == "page 1 of 40"

        # Typing into the search box finds the one answer that holds the word.
        b.click("#search")
        b.type(NEEDLE)
        b.wait_for(f"{count} === '1 of 1000 questions'")
        assert b.eval("[...document.querySelectorAll('article.q')].map(a => a.id)") == ["q-777"]
        shown = b.eval("document.querySelector('#q-777 .ans[data-model=\"panel-07\"] pre').textContent")
        assert shown == ODD_ANSWER  # U+2028, [/] and tags intact, as text
        assert b.eval("typeof window.__pwned") == "undefined"
        assert b.eval("document.querySelectorAll('script').length") == 2
        assert b.eval("document.querySelectorAll('.ans img').length") == 0

        ARTIFACTS.mkdir(exist_ok=True)
        b.screenshot(ARTIFACTS / "report-scale-search.png")

        # Clear the search; the model filter: panel-07's wrong answers, as many as metrics.json counts.
        b.eval("(() => { const s = document.getElementById('search'); s.value = ''; "
               "s.dispatchEvent(new Event('input')); })()")
        b.wait_for(f"{count} === '1000 of 1000 questions'")
        # A <select> cannot be opened in headless Chromium: the value is set and "change" sent,
        # as the browser does when a user picks an option.
        b.eval("(() => { for (const [id, v] of [['f-status', 'wrong'], ['f-model', '7']]) { "
               "const s = document.getElementById(id); s.value = v; "
               "s.dispatchEvent(new Event('change')); } })()")
        b.wait_for(f"{count} === '{wrong_7} of 1000 questions'")
        statuses = b.eval("[...document.querySelectorAll('.ans[data-model=\"panel-07\"]')]"
                          ".map(a => a.dataset.status)")
        assert statuses and set(statuses) == {"wrong"}

        # The next page shows the next questions.
        first = b.eval("document.querySelector('article.q').id")
        b.click("#next")
        b.wait_for(f"document.querySelector('article.q').id !== '{first}'")
        assert b.eval("document.getElementById('page').textContent").startswith("page 2 of ")
        b.screenshot(ARTIFACTS / "report-scale.png")
    assert (ARTIFACTS / "report-scale.png").stat().st_size > 10_000
    shutil.copy(page, ARTIFACTS / "report-scale.html")
