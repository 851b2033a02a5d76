"""Jobs sized from the model: a new user's panel gets GPUs and memory that hold its weights.

The weights are looked up as the launcher looks them up on a real machine, through
``huggingface_hub`` against a loopback fake of the Hub (tests/fakes/hf_hub.py) that serves the
panel's real configs and safetensors headers; nothing is downloaded but headers and configs.
"""

from __future__ import annotations

import json
from pathlib import Path

import huggingface_hub.constants
import kubernetes_validate
import yaml

from launcher.k8s.sizing import GiB, quantity_bytes
from launcher.k8s.weights import params_from_config
from tests.conftest import run_cli, write
from tests.fakes.hf_hub import (
    BIOMEDLM,
    LLAMA_70B,
    MEDGEMMA_27B,
    PMC_LLAMA_13B,
    causal_lm_tensors,
    hf_hub_fixture,  # noqa: F401 - fixture
    parameter_count,
    safetensors_files,
)

QUESTIONS = "".join(json.dumps({"question": q}) + "\n" for q in (
    "What is the first-line treatment for HER2-positive metastatic breast cancer?",
    "Which BRCA1 variants are pathogenic?\u2028Answer briefly.",
    "Explain the [/] staging of non-small cell lung cancer (TNM 8th edition) for a patient with a "
    "4.2 cm tumour, ipsilateral hilar nodes and no distant metastases, and say how it guides treatment.",
))

PANEL = """
name: first-contact
questions: q.jsonl
output: s3://medbench/runs
models:
  - id: google/medgemma-27b-text-it
    quantization: 4bit
  - id: axiong/PMC_LLaMA_13B
    dtype: float16
    prompt_format: pmc-llama
  - id: stanford-crfm/BioMedLM
    dtype: bfloat16
  - id: gpt-4o
  - id: gemini-3-pro-preview
  - id: cambridgeltl/SapBERT-from-PubMedBERT-fulltext
    backend: embed
"""


def render(project: Path, text: str, capsys) -> tuple[dict[str, dict], str]:
    write(project / "q.jsonl", QUESTIONS)
    write(project / "models.yaml", text)
    assert run_cli("render", "models.yaml") == 0
    captured = capsys.readouterr()
    docs = yaml.safe_load_all(captured.out)
    jobs = {j["metadata"]["annotations"]["medbench.io/model-dir"]: j for j in docs}
    for job in jobs.values():
        kubernetes_validate.validate(job, kubernetes_validate.latest_version(), strict=True)
    return jobs, captured.err


def resources(job: dict) -> dict:
    return job["spec"]["template"]["spec"]["containers"][0]["resources"]


def gpus(job: dict) -> int:
    return int(resources(job)["requests"].get("nvidia.com/gpu", 0))


def memory(job: dict) -> int:
    return quantity_bytes(resources(job)["requests"]["memory"])


def sizing(job: dict) -> dict:
    facts = json.loads(job["metadata"]["annotations"]["medbench.io/sizing"])
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert json.loads(env["MEDBENCH_SIZING"]) == facts  # what the runner records in the manifest
    return facts


def shm(job: dict) -> str | None:
    pod = job["spec"]["template"]["spec"]
    return next((v["emptyDir"].get("sizeLimit") for v in pod["volumes"] if v["name"] == "dshm"), None)


def test_the_panel_gets_gpus_and_memory_that_hold_its_weights(hub, project, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_reader")  # MedGemma is gated
    hub.tokens.add("hf_reader")
    jobs, err = render(project, PANEL, capsys)

    medgemma, pmc, biomedlm = (jobs[m] for m in ("google_medgemma-27b-text-it", "axiong_PMC_LLaMA_13B",
                                                  "stanford-crfm_BioMedLM"))
    # MedGemma 27B in 4 bits: 27B parameters from the safetensors metadata, about 16 GiB on the GPU,
    # one GPU; the pod holds the 16-bit weights while bitsandbytes quantizes them.
    facts = sizing(medgemma)
    assert facts["params"] == parameter_count(causal_lm_tensors(MEDGEMMA_27B))
    assert 26.5e9 < facts["params"] < 27.5e9
    assert facts["source"] == "the Hub's safetensors metadata" and facts["load"] == "4bit"
    assert 14 < facts["weights_gib"] < 20
    assert gpus(medgemma) == 1 and memory(medgemma) >= facts["params"] * 2
    # PMC-LLaMA 13B has .bin weights only: its size comes from config.json; in float16 it is 26 GB,
    # more than the old 1Gi by far, and it gets a GPU although the entry names none.
    facts = sizing(pmc)
    assert facts["source"] == "config.json on the Hub" and facts["load"] == "float16"
    assert abs(facts["params"] - 13.0e9) < 0.2e9
    assert gpus(pmc) == 1 and memory(pmc) >= 13.0e9 * 2
    assert facts["needed_gib"] < 80 * 0.92
    # BioMedLM (GPT-2 architecture, 2.7B): one GPU, memory for its bfloat16 weights.
    facts = sizing(biomedlm)
    assert 2.5e9 < facts["params"] < 2.8e9 and gpus(biomedlm) == 1
    assert memory(biomedlm) >= facts["params"] * 2
    for job in (medgemma, pmc, biomedlm):
        res = resources(job)
        assert res["requests"] == res["limits"]  # Guaranteed: an evicted 27B loses its load time
        assert shm(job) == "1Gi" and job["spec"]["template"]["spec"]["containers"][0]["image"].endswith(
            "medbench-runner:0.1.0")

    # API models and encoders stay small; encoders get memory for their weights, no GPU.
    small = {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "1Gi"}}
    assert resources(jobs["gpt-4o"]) == small
    assert "medbench.io/sizing" not in jobs["gpt-4o"]["metadata"]["annotations"]
    sap = jobs["cambridgeltl_SapBERT-from-PubMedBERT-fulltext"]
    assert gpus(sap) == 0 and 1 * GiB < memory(sap) <= 4 * GiB
    assert 0.1e9 < sizing(sap)["params"] < 0.12e9

    # render says what it chose and from where, one line a model, on stderr (stdout is the YAML).
    lines = [line for line in err.splitlines() if line.startswith("sizing:")]
    assert len(lines) == 4
    assert any("google_medgemma-27b-text-it" in line and "the Hub's safetensors metadata" in line
               and "1 × A100-80GB" in line for line in lines)
    assert "warning" not in err


def test_a_70b_model_in_16_bits_gets_tensor_parallel_over_several_gpus(hub, project, capsys):
    jobs, err = render(project, """
        questions: q.jsonl
        output: s3://medbench/runs
        models:
          - {id: meta-llama/Llama-3.1-70B-Instruct, dtype: float16}
        """, capsys)
    job = jobs["meta-llama_Llama-3.1-70B-Instruct"]
    facts = sizing(job)
    # Its model info carries no parameter count, so the 30 shards' headers were read (by Range).
    assert facts["source"] == "the Hub's safetensors metadata"
    assert facts["params"] == parameter_count(causal_lm_tensors(LLAMA_70B))
    ranges = [r for r in hub.requests if r[0] == "GET" and "range" in r[2]]
    assert len(ranges) == 30 and all(r[2]["range"].startswith("bytes=0-") for r in ranges)
    n = gpus(job)
    assert n in (2, 4, 8) and n * 80 * GiB * 0.92 >= facts["needed_gib"] * GiB > 131 * GiB
    assert memory(job) >= facts["params"] * 2  # the weights pass through the pod while loading
    assert shm(job) == f"{4 * n}Gi" and int(resources(job)["requests"]["cpu"]) == 4 + 4 * n
    assert f"{n} × A100-80GB" in err


def test_a_vllm_job_is_sized_for_vllms_batch_not_transformers(hub, project, capsys):
    jobs, err = render(project, """
        questions: q.jsonl
        output: s3://medbench/runs
        models:
          - {id: axiong/PMC_LLaMA_13B, dtype: float16}
          - {id: axiong/PMC_LLaMA_13B, name: on-vllm, backend: vllm, dtype: float16}
          - {id: axiong/PMC_LLaMA_13B, name: on-vllm-8, backend: vllm, dtype: float16, batch_size: 8}
        """, capsys)
    hf, vllm, small = (sizing(jobs[m]) for m in ("axiong_PMC_LLaMA_13B", "on-vllm", "on-vllm-8"))
    # transformers holds its whole batch of 32 in the KV cache; vLLM is handed chunks of 256 (its
    # own auto) and schedules as many as its cache holds: the Job is sized for 32 at once.
    assert hf["batch"] == 32 and "kv_sequences" not in hf
    assert vllm["batch"] == 256 and vllm["kv_sequences"] == 32
    assert vllm["kv_cache_gib"] == hf["kv_cache_gib"] and gpus(jobs["on-vllm"]) == 1
    # A chunk of 8 is all vLLM can run at once.
    assert small["batch"] == 8 and "kv_sequences" not in small
    assert small["kv_cache_gib"] < vllm["kv_cache_gib"]
    assert "KV cache (32 × " in err and "KV cache (8 × " in err


def test_a_model_nothing_can_size_gets_one_clear_line_and_the_stated_default(hub, project, capsys):
    jobs, err = render(project, """
        questions: q.jsonl
        output: s3://medbench/runs
        models:
          - id: hospital/clinical-notes-model
        """, capsys)
    [warning] = [line for line in err.splitlines() if "warning" in line]
    assert warning.startswith("warning: hospital/clinical-notes-model: cannot size from its weights")
    assert "was not found on the Hub" in warning and "1 GPU, 8 CPU, 64Gi memory" in warning
    assert "set gpus: and resources:" in warning
    job = jobs["hospital_clinical-notes-model"]
    assert gpus(job) == 1 and resources(job)["requests"]["memory"] == "64Gi"


def test_gpus_0_is_the_only_way_a_local_generative_model_gets_no_gpu(hub, project, capsys):
    jobs, err = render(project, """
        questions: q.jsonl
        output: s3://medbench/runs
        models:
          - {id: stanford-crfm/BioMedLM, gpus: 0}
          - {id: axiong/PMC_LLaMA_13B, name: pmc-tight, dtype: float16, gpus: 1,
             resources: {memory: 16Gi}}
          - {id: meta-llama/Llama-3.1-70B-Instruct, name: llama-one-gpu, dtype: float16, gpus: 1}
        """, capsys)
    cpu_job = jobs["stanford-crfm_BioMedLM"]
    assert gpus(cpu_job) == 0 and "dshm" not in json.dumps(cpu_job)
    # On CPU the weights load as float32: 4 bytes a parameter.
    assert memory(cpu_job) >= sizing(cpu_job)["params"] * 4
    assert cpu_job["spec"]["template"]["spec"]["containers"][0]["image"].endswith("medbench-runner:0.1.0")
    # What the user writes wins, with a warning when it cannot hold the model.
    assert resources(jobs["pmc-tight"])["requests"]["memory"] == "16Gi"
    assert gpus(jobs["llama-one-gpu"]) == 1
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2
    assert any("axiong/PMC_LLaMA_13B: memory 16Gi is less than" in w for w in warnings)
    assert any("meta-llama/Llama-3.1-70B-Instruct: gpus: 1 gives 80Gi" in w and "run out of memory" in w
               for w in warnings)


def test_smaller_gpus_mean_more_of_them(hub, project, capsys):
    jobs, err = render(project, """
        questions: q.jsonl
        output: s3://medbench/runs
        cluster: {gpu_type: L4}
        models:
          - {id: axiong/PMC_LLaMA_13B, dtype: float16}
          - {id: stanford-crfm/BioMedLM, dtype: bfloat16, placement: {gpu_memory: 80Gi}}
        """, capsys)
    pmc = jobs["axiong_PMC_LLaMA_13B"]
    assert gpus(pmc) >= 2 and sizing(pmc)["gpu_type"] == "L4" and sizing(pmc)["gpu_memory_gib"] == 24
    assert gpus(jobs["stanford-crfm_BioMedLM"]) == 1


def test_the_revision_is_the_one_sized(hub, project, capsys):
    small = dict(PMC_LLAMA_13B, num_hidden_layers=20)
    hub.add("axiong/PMC_LLaMA_13B", {"config.json": small}, revision="pruned-v2")
    jobs, _ = render(project, """
        questions: q.jsonl
        output: s3://medbench/runs
        models:
          - {id: axiong/PMC_LLaMA_13B, dtype: float16}
          - {id: axiong/PMC_LLaMA_13B, name: pruned, revision: pruned-v2, dtype: float16}
        """, capsys)
    facts = {name: sizing(job) for name, job in jobs.items()}
    assert facts["pruned"]["params"] == params_from_config(small) < facts["axiong_PMC_LLaMA_13B"]["params"]
    assert any("/revision/pruned-v2" in r[1] for r in hub.requests)


def test_render_works_offline_once_the_metadata_is_cached(hub, project, capsys, monkeypatch):
    text = "questions: q.jsonl\noutput: s3://medbench/runs\nmodels:\n  - {id: axiong/PMC_LLaMA_13B}\n" \
           "  - {id: meta-llama/Llama-3.1-70B-Instruct, quantization: 4bit}\n"
    first, _ = render(project, text, capsys)
    cached = sorted(p.name for p in (project / "medbench-cache" / "hub").iterdir())
    assert cached == ["axiong--PMC_LLaMA_13B@main.json", "meta-llama--Llama-3.1-70B-Instruct@main.json"]

    hub.stop()
    seen = len(hub.requests)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    again, err = render(project, text, capsys)
    assert len(hub.requests) == seen
    for name, job in again.items():
        assert sizing(job) | {"source": ""} == sizing(first[name]) | {"source": ""}
    assert all(sizing(j)["source"].endswith(", cached") for j in again.values())
    # PMC-LLaMA's checkpoint is float32 and dtype: auto keeps it: 52 GB of weights and a float32 KV
    # cache, which one 80Gi GPU cannot hold.
    pmc = sizing(again["axiong_PMC_LLaMA_13B"])
    assert pmc["load"] == "float32" and pmc["weights_gib"] > 48 and pmc["needed_gib"] > 80
    assert pmc["gpus"] == 2
    assert "warning" not in err


def test_offline_with_nothing_cached_falls_back_to_the_size_in_the_id(project, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("MEDBENCH_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hf"))
    jobs, err = render(project, "questions: q.jsonl\noutput: s3://b-1/r\nmodels:\n"
                       "  - {id: google/medgemma-27b-text-it, quantization: 4bit}\n"
                       "  - {id: stanford-crfm/BioMedLM}\n", capsys)
    facts = sizing(jobs["google_medgemma-27b-text-it"])
    assert facts["source"] == "the size in its id ('27b')" and facts["params"] == 27e9 and facts["gpus"] == 1
    [warning] = [line for line in err.splitlines() if line.startswith("warning:")]
    assert "stanford-crfm/BioMedLM: cannot size" in warning and "HF_HUB_OFFLINE" in warning


def test_a_gated_model_is_sized_from_its_public_metadata_without_a_token(hub, project, capsys):
    jobs, err = render(project, PANEL, capsys)
    facts = sizing(jobs["google_medgemma-27b-text-it"])
    assert facts["source"] == "the Hub's safetensors metadata" and facts["gpus"] == 1
    entry = project / "medbench-cache" / "hub" / "google--medgemma-27b-text-it@main.json"
    cached = json.loads(entry.read_text())
    assert cached["gated"] is True and "config" not in cached  # config.json needs the token


def test_a_model_in_a_local_folder_is_sized_from_its_files(project, capsys):
    folder = project / "weights" / "biomedlm"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(BIOMEDLM))
    tensors = {"transformer.wte.weight": ("BF16", [28896, 2560]),
               "transformer.h.0.mlp.c_fc.weight": ("BF16", [2560, 10240])}
    (folder / "model.safetensors").write_bytes(safetensors_files(tensors)["model.safetensors"])
    jobs, _ = render(project, "questions: q.jsonl\noutput: s3://b-1/r\nmodels:\n"
                     f"  - {{id: stanford-crfm/BioMedLM, path: {folder}}}\n", capsys)
    facts = sizing(jobs["stanford-crfm_BioMedLM"])
    assert facts["source"] == f"safetensors headers in {folder}"
    assert facts["params"] == parameter_count(tensors) and facts["checkpoint_dtype"] == "bfloat16"


def test_the_pod_records_its_jobs_sizing_in_the_manifest(project, monkeypatch):
    # The env var a rendered Job carries (MEDBENCH_SIZING) ends in the model's manifest, and a
    # rerun of the pod without it keeps what the first attempt recorded.
    from runner.artefacts.stored import stage_run
    from runner.config import parse_config
    from runner.main import main as runner_main
    from runner.plan import make_plan
    from runner.storage import open_storage

    write(project / "q.jsonl", QUESTIONS)
    text = "name: sized\nquestions: q.jsonl\noutput: out\nmodels:\n  - {id: org/echo-model, backend: echo}\n"
    write(project / "models.yaml", text)
    plan = make_plan(parse_config(text, base_dir=project))
    stage_run(plan, open_storage("out"))
    facts = {"parameters": 2_700_000_000, "source": "safetensors metadata", "gpus": 1, "memory": "24Gi"}
    for name, value in (("MEDBENCH_OUTPUT", "out"), ("MEDBENCH_RUN_ID", plan.run_id),
                        ("MEDBENCH_MODEL", "org_echo-model"), ("MEDBENCH_SIZING", json.dumps(facts))):
        monkeypatch.setenv(name, value)
    assert runner_main([]) == 0
    manifest = project / "out" / plan.run_id / "org_echo-model" / "manifest.json"
    assert json.loads(manifest.read_text())["sizing"] == facts
    monkeypatch.setenv("MEDBENCH_SIZING", "{not json")
    assert runner_main([]) == 0
    assert json.loads(manifest.read_text())["sizing"] == facts
