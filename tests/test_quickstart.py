"""The README's first command: the quickstart config, a real model on CPU, 30 answers."""

from __future__ import annotations

import json
import shutil

from tests.conftest import REPO, run_cli


def test_quickstart_answers_all_seed_questions_with_smollm2(project):
    shutil.copytree(REPO / "examples", project / "examples")
    shutil.copytree(REPO / "questions", project / "questions")
    assert run_cli("run", "examples/quickstart.yaml") == 0
    (run,) = list((project / "results").iterdir())
    model = run / "HuggingFaceTB_SmolLM2-135M-Instruct"
    answers = [(model / f"{i}.txt").read_text() for i in range(1, 31)]
    assert all(a.strip() for a in answers)
    manifest = json.loads((model / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["done"] == 30
    assert manifest["prompt_rule"] == "chat"
    records = [json.loads(line) for line in (model / "responses.jsonl").read_text().splitlines()]
    assert len(records) == 30
    assert all("oncology" in r["prompt"] for r in records)
