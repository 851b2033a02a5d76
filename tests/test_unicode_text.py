"""Text with Unicode line separators goes through every command that reads a run's files.

U+2028, U+2029 and U+0085 are legal unescaped inside JSON strings and turn up in real
abstracts (PubMed's section breaks). ``str.splitlines()`` treats each as a line end, so a
reader that uses it cuts a record in two. The story: a researcher's questions hold them, the
echo model puts them in its prompt, an OpenAI-compatible model quotes them in its answer, and
the run is then read back by ``run``, ``render``, ``submit``, the pod's ``runner``, ``status``,
``collect``, ``show`` and ``report``: each must exit 0 and keep the text whole.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from runner.artefacts import jsonl
from runner.main import main as runner_main
from tests.conftest import run_cli, write
from tests.fakes.k8s_api import FakeKubernetes
from tests.fakes.openai_server import FakeOpenAI, Fault

LS, PS, NEL = "\u2028", "\u2029", "\u0085"
KEY = "sk-unicode-test"

# An abstract as PubMed exports it: sections split by paragraph separators, a line separator
# inside one, and a NEL where a Windows-1252 round trip left one.
ABSTRACT = (
    f"BACKGROUND: Adjuvant endocrine therapy lowers recurrence in oestrogen-receptor-positive "
    f"breast cancer.{PS}METHODS: We reviewed 412 women treated between 2004 and 2012;{LS}median "
    f"follow-up was 7 years.{NEL}RESULTS: Recurrence fell by 31 % (95 % CI 22–39) with "
    f"tamoxifen.{PS}CONCLUSIONS: The benefit held across age groups."
)
QUESTIONS = [
    {"id": "pmq-1", "question": f"Does adjuvant tamoxifen{LS}reduce recurrence{PS}in ER-positive disease?",
     "context": ABSTRACT, "options": ["yes", "no", "maybe"], "answer": "yes"},
    {"id": "pmq-2", "question": f"Is the benefit limited to women over 50?{NEL}",
     "context": ABSTRACT, "options": ["yes", "no", "maybe"], "answer": "no"},
    {"id": "pmq-3", "question": "What does HER2 amplification predict?",
     "reference": f"Response to trastuzumab.{LS}Also a worse prognosis without it."},
]
SEPARATORS = (LS, PS, NEL)

CONFIG = """
name: unicode
questions: q.jsonl
output: {output}
system_prompt: none
cluster:
  namespace: medbench
  image: reg.example/runner:1.0
models:
  - id: echo-model
    backend: echo
  - id: gpt-4o
    backend: openai
    base_url: {url}
"""


# What the model answers to the first two questions: it quotes the abstract, separators and all.
ANSWERS = {
    "Does adjuvant tamoxifen": f"A. yes{PS}The abstract says:{LS}recurrence fell by 31 %.{NEL}",
    "Is the benefit limited": f"B. no{LS}It held across age groups.{PS}{NEL}See RESULTS.",
}


def completion(text: str) -> dict:
    """An OpenAI chat completion carrying ``text`` exactly (the fake's own answers rejoin words)."""
    return {"id": "chatcmpl-u", "object": "chat.completion", "created": 0, "model": "gpt-4o-2024-08-06",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 90, "completion_tokens": 12, "total_tokens": 102}}


@pytest.fixture
def server():
    with FakeOpenAI(key=KEY) as s:
        for match, text in ANSWERS.items():
            s.on(match, Fault.status_code(200, completion(text)))
        yield s


@pytest.fixture
def panel(project, server, monkeypatch) -> Path:
    """The questions (each with separators) and a models.yaml writing to ./out."""
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    # Written as users' tools write JSONL: non-ASCII kept as it is, separators raw.
    (project / "q.jsonl").write_text(
        "".join(json.dumps(q, ensure_ascii=False) + "\n" for q in QUESTIONS), encoding="utf-8")
    assert LS in (project / "q.jsonl").read_text(encoding="utf-8")  # raw, not \u2028
    return write(project / "models.yaml", CONFIG.format(output="out", url=server.url))


@pytest.fixture
def run_dir(panel, project) -> Path:
    assert run_cli("run", "models.yaml") == 0
    (run,) = (project / "out").iterdir()
    return run


def read_jsonl(path: Path) -> list[dict]:
    return [obj for _, obj in jsonl.parse(path.read_text(encoding="utf-8"))]


def assert_whole(run: Path) -> None:
    """Every file of the run holds one record per question, with the separators kept."""
    staged = read_jsonl(run / "questions.jsonl")
    assert [q["question"] for q in staged] == [q["question"] for q in QUESTIONS]
    assert staged[0]["context"] == ABSTRACT
    echo = read_jsonl(run / "echo-model" / "responses.jsonl")
    assert [r["index"] for r in echo] == [1, 2, 3]
    assert all(sep in echo[0]["prompt"] for sep in SEPARATORS)  # the prompt as sent, whole
    api = read_jsonl(run / "gpt-4o" / "responses.jsonl")
    assert [r["index"] for r in api] == [1, 2, 3]
    assert [r["response"] for r in api[:2]] == list(ANSWERS.values())
    for i in (1, 2):
        assert (run / "gpt-4o" / f"{i}.txt").read_text(encoding="utf-8") == api[i - 1]["response"]
    for model in ("echo-model", "gpt-4o"):
        assert json.loads((run / model / "manifest.json").read_text())["status"] == "complete"


def test_a_local_run_keeps_separators_in_questions_prompts_and_answers(run_dir):
    assert_whole(run_dir)


def test_a_second_run_reads_its_own_files_back(panel, run_dir):
    # Resuming reads the staged questions.jsonl and every record: nothing to redo.
    before = {p: p.read_bytes() for p in run_dir.rglob("records/*.json")}
    assert run_cli("run", "models.yaml") == 0
    assert {p: p.read_bytes() for p in run_dir.rglob("records/*.json")} == before


def test_show_prints_the_question_and_every_answer(run_dir, capsys):
    assert run_cli("show", run_dir, "1") == 0
    out = capsys.readouterr().out
    assert "Does adjuvant tamoxifen" in out and "echo-model" in out and "gpt-4o" in out


def test_report_scores_the_run(run_dir, capsys):
    assert run_cli("report", run_dir, "--encoder", "none", "--bootstrap", "20") == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {m["model_dir"] for m in metrics["models"]} == {"echo-model", "gpt-4o"}
    assert all(m["n"] == 3 for m in metrics["models"])


# --- the same questions through the cluster path ------------------------------------------


@pytest.fixture
def k8s(tmp_path, monkeypatch):
    fake = FakeKubernetes().start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(fake.kubeconfig()))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    try:
        yield fake
    finally:
        fake.stop()


def test_render_and_a_dry_run_submit_accept_the_questions(panel, project, k8s, capsys):
    assert run_cli("render", "models.yaml", "-o", "manifests") == 0
    assert len(list((project / "manifests").glob("*.yaml"))) == 2
    assert run_cli("submit", "models.yaml", "--dry-run", "--force", "--shared-output-pvc", "results-nfs") == 0
    assert "dry run" in capsys.readouterr().out
    assert not (project / "out").exists()


def test_submitted_run_runs_in_pods_and_comes_back_whole(panel, project, k8s, capsys):
    assert run_cli("submit", "models.yaml", "--force", "--shared-output-pvc", "results-nfs") == 0
    (run,) = (project / "out").iterdir()
    # What each Job's pod runs, against the questions submit staged.
    for model in ("echo-model", "gpt-4o"):
        assert runner_main(["--output", "out", "--run-id", run.name, "--model", model]) == 0
    capsys.readouterr()
    assert run_cli("status", run.name, "--from", "out", "--json") == 0
    status = json.loads(capsys.readouterr().out)
    assert [m["state"] for m in status["models"]] == ["complete", "complete"]
    assert run_cli("collect", run.name, "--from", "out", "--dest", "collected") == 0
    assert_whole(project / "collected" / run.name)
