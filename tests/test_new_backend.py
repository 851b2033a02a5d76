"""Adding a backend is one module and one descriptor, as docs/development.md says.

A Claude-like API backend is defined here and nowhere else: its class below is its module, and
its descriptor is registered for the test. ``launcher plan`` prices it, ``launcher render``
gives its pods its Secret and the CPU image, the models.yaml reference documents it and
``launcher run`` answers with it, with no other file of medbench edited.
"""

from __future__ import annotations

import json
from typing import Literal

import pytest
import yaml
from pydantic import Field

from runner.backends.base import AsyncGenerator, GenRequest, GenResult
from runner.config import register
from runner.config.backends import APIModel, Descriptor, PriceTable, SecretEnv, unregister
from runner.config.base import SecretName
from runner.config.reference import render_reference
from runner.credentials import api_key
from tests.conftest import run_cli, write


class ClaudeLikeModel(APIModel):
    """A Claude-like messages API."""

    backend: Literal["claude"] = Field(description="claude: a Claude-like messages API.")
    api_key_env: str = Field("CLAUDE_API_KEY", description="Environment variable holding the key.")


class ClaudeLikeBackend(AsyncGenerator):
    """Answers at once, in the form a messages API would: the first words of the question."""

    def preflight(self) -> None:
        api_key(self.spec.api_key_env, model=self.spec.id)

    async def agenerate(self, request: GenRequest) -> GenResult:
        words = request.user.split()
        return GenResult(text="Claude-like: " + " ".join(words[:5]), finish_reason="stop",
                         input_tokens=len(words), output_tokens=6, latency_s=0.0)


CLAUDE = Descriptor(
    "claude", ClaudeLikeModel, f"{__name__}:ClaudeLikeBackend", "", "A Claude-like messages API", image="cpu",
    secrets=(SecretEnv(SecretName("claude", "medbench-claude", "the Claude key under 'api-key'"),
                       "api-key"),),
    api=True, id_prefixes=("claude-",), packages=("anthropic",),
    prices=PriceTable("2026-01-15", "https://claude.example/pricing", {"claude-like": (3.0, 15.0)}),
)

CONFIG = """
name: claude-panel
questions: q.jsonl
output: {output}
cluster:
  image: registry.example.org/medbench-runner:1
  cpu_image: registry.example.org/medbench-runner-cpu:1
models:
  - id: claude-like-2
  - id: echo-check
    backend: echo
"""


@pytest.fixture
def claude(project, monkeypatch, tmp_path):
    monkeypatch.setenv("MEDBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "200")
    write(project / "q.jsonl", "".join(json.dumps({"question": q}) + "\n" for q in (
        "Which trial established trastuzumab for HER2-positive early breast cancer?",
        "What does BRCA2 stand for?",
    )))
    register(CLAUDE)
    yield project
    unregister("claude")


def test_plan_prices_it_from_its_descriptors_table(claude, capsys):
    write(claude / "models.yaml", CONFIG.format(output="s3://medbench/runs"))
    assert run_cli("plan", "models.yaml", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    model = next(m for m in data["models"] if m["model"] == "claude-like-2")
    assert model["backend"] == "claude"  # inferred from the id's prefix, as for gpt- and gemini-
    assert model["price_basis"] == "price table of 2026-01-15"
    assert model["api_cost"] == pytest.approx(
        (model["input_tokens"] * 3.0 + model["output_tokens"] * 15.0) / 1e6)
    assert data["price_tables"] == [{"as_of": "2026-01-15", "source": "https://claude.example/pricing"}]
    assert run_cli("plan", "models.yaml") == 0
    assert "API prices as published on 2026-01-15 (https://claude.example/pricing)" in capsys.readouterr().out


def test_render_gives_its_pods_its_secret_and_the_cpu_image(claude, capsys):
    write(claude / "models.yaml", CONFIG.format(output="s3://medbench/runs")
          + "  - id: claude-like-3\n    api_key_env: TEAM_CLAUDE_KEY\n"
          + "  - id: gpt-4o\n")
    assert run_cli("render", "models.yaml") == 0
    jobs = {j["metadata"]["annotations"]["medbench.io/model-id"]: j
            for j in yaml.safe_load_all(capsys.readouterr().out)}

    def container(model: str) -> dict:
        return jobs[model]["spec"]["template"]["spec"]["containers"][0]

    def secret_refs(model: str) -> dict[str, dict]:
        return {e["name"]: e["valueFrom"]["secretKeyRef"]
                for e in container(model)["env"] if "valueFrom" in e}

    assert container("claude-like-2")["image"] == "registry.example.org/medbench-runner-cpu:1"
    assert secret_refs("claude-like-2")["CLAUDE_API_KEY"] == {"name": "medbench-claude", "key": "api-key"}
    assert secret_refs("claude-like-3")["TEAM_CLAUDE_KEY"] == {"name": "medbench-claude", "key": "api-key"}
    assert "CLAUDE_API_KEY" not in secret_refs("gpt-4o") and "OPENAI_API_KEY" in secret_refs("gpt-4o")

    # Its Secret takes a key under cluster.secrets like the built-in ones; a misspelt key is refused.
    write(claude / "models.yaml", CONFIG.format(output="s3://medbench/runs").replace(
        "cluster:\n", "cluster:\n  secrets: {claude: team-claude}\n"))
    assert run_cli("render", "models.yaml") == 0
    jobs = {j["metadata"]["annotations"]["medbench.io/model-id"]: j
            for j in yaml.safe_load_all(capsys.readouterr().out)}
    assert secret_refs("claude-like-2")["CLAUDE_API_KEY"]["name"] == "team-claude"
    write(claude / "models.yaml", CONFIG.format(output="s3://medbench/runs").replace(
        "cluster:\n", "cluster:\n  secrets: {cluade: team-claude}\n"))
    assert run_cli("render", "models.yaml") == 2
    assert "models.yaml:5: cluster.secrets.cluade: unknown key" in capsys.readouterr().err


def test_the_reference_documents_it(claude):
    text = render_reference()
    section = text[text.index("### backend: claude"):]
    section = section[:section.index("\n## ")]
    assert "A Claude-like messages API. Its Jobs: the CPU runner image" in section
    assert "`CLAUDE_API_KEY` (claude)" in text  # api_key_env's default, per backend
    assert ("| `claude` | str | `medbench-claude` | Secret with the Claude key under 'api-key' "
            "(backend claude). |") in text
    assert "`claude-`" in text  # the id prefix that implies it


def test_launcher_run_answers_with_it(claude, capsys, monkeypatch):
    write(claude / "models.yaml", CONFIG.format(output="results"))
    monkeypatch.delenv("CLAUDE_API_KEY", raising=False)
    assert run_cli("run", "models.yaml") == 2  # its own preflight: the key is missing
    assert "CLAUDE_API_KEY" in capsys.readouterr().err
    assert not (claude / "results").exists()

    monkeypatch.setenv("CLAUDE_API_KEY", "sk-claude-test")
    assert run_cli("run", "models.yaml") == 0
    (run,) = (claude / "results").iterdir()
    lines = (run / "claude-like-2" / "responses.jsonl").read_text().splitlines()
    answers = [json.loads(line) for line in lines]
    assert [a["response"] for a in answers] == ["Claude-like: Which trial established trastuzumab for",
                                                "Claude-like: What does BRCA2 stand for?"]
    manifest = json.loads((run / "claude-like-2" / "manifest.json").read_text())
    assert manifest["backend"] == "claude" and manifest["status"] == "complete"
    assert "sk-claude-test" not in (run / "claude-like-2" / "manifest.json").read_text()
