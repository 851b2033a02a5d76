"""The runner images: what a cluster admin builds once and every Job runs.

These tests read the Dockerfiles and requirement files the way a reviewer would, on any machine.
Where a Docker daemon runs, tests/test_containers.py builds both images (scripts/build-images.sh)
and runs the rendered Jobs in them; tests/test_build_images.py checks the build script's failures.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from launcher.k8s.render import CACHE_MOUNT, HF_HOME, RUN_AS
from tests.conftest import REPO

IMAGES = REPO / "images"
DOCKERFILES = [IMAGES / "Dockerfile", IMAGES / "Dockerfile.cpu"]
REQUIREMENTS = [IMAGES / "requirements-gpu.txt", IMAGES / "requirements-cpu.txt"]


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def args_of(path: Path) -> dict[str, str]:
    return dict(a.split("=", 1) for i, a in instructions(path) if i == "ARG" and "=" in a)


def resolve(ref: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], ref)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_both_images_start_from_one_base_pinned_to_an_exact_version(dockerfile):
    froms = [a.split()[0] for i, a in instructions(dockerfile) if i == "FROM"]
    # Every stage starts from the one build argument, so `--build-arg BASE_IMAGE=...` moves both.
    assert froms and set(froms) == {"${BASE_IMAGE}"}, froms
    base = args_of(dockerfile)["BASE_IMAGE"]
    assert base == args_of(IMAGES / "Dockerfile")["BASE_IMAGE"]
    name, _, tag = base.rpartition(":")
    # A full version (x.y.z), not a moving tag like "3.11" or "slim".
    assert name == "python" and re.match(r"^3\.11\.\d+-slim-bookworm$", tag), base


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_the_legacy_builder_can_build_them(dockerfile):
    # A `# syntax=` line makes BuildKit fetch a frontend image from a registry.
    assert not re.search(r"(?im)^#\s*syntax=", dockerfile.read_text())


def test_the_gpu_image_gets_cuda_from_its_pinned_wheels_not_from_a_cuda_base_image():
    text = (IMAGES / "Dockerfile").read_text()
    assert "nvidia/cuda" not in re.sub(r"(?m)^#.*$", "", text)
    pins = (IMAGES / "requirements-gpu.txt").read_text()
    # The CUDA 13 runtime, cuDNN, NCCL, cuBLAS and nvcc (Triton's ptxas) come as wheels with torch.
    for pkg in ("torch==2.13.0", "nvidia-cuda-runtime==13.", "nvidia-cudnn-cu13==", "nvidia-nccl-cu13==",
                "nvidia-cublas==13.", "nvidia-cuda-nvcc==13.", "triton=="):
        assert f"\n{pkg}" in pins, pkg
    # Triton compiles its launchers with a C compiler when a model first runs.
    runs = " ".join(a for i, a in instructions(IMAGES / "Dockerfile") if i == "RUN")
    assert re.search(r"apt-get install -y --no-install-recommends gcc libc6-dev\b", runs)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_the_image_runs_as_the_non_root_user_the_jobs_expect(dockerfile):
    users = [a for i, a in instructions(dockerfile) if i == "USER"]
    assert users, "no USER: the container would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) == RUN_AS  # numeric, so runAsNonRoot can verify it


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hf_home_is_on_the_volume_the_jobs_mount(dockerfile):
    env = " ".join(a for i, a in instructions(dockerfile) if i == "ENV")
    assert f"HF_HOME={HF_HOME}" in env
    assert HF_HOME.startswith(CACHE_MOUNT + "/")
    volumes = [json.loads(a) for i, a in instructions(dockerfile) if i == "VOLUME"]
    assert [CACHE_MOUNT] in volumes
    # Created and owned by the runtime user, so it is writable without the PVC too.
    runs = [a for i, a in instructions(dockerfile) if i == "RUN"]
    assert any(f"chown -R {RUN_AS}:{RUN_AS} {CACHE_MOUNT}" in a for a in runs)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_the_entrypoint_is_the_runner_and_nothing_installs_at_run_time(dockerfile):
    entry = [json.loads(a) for i, a in instructions(dockerfile) if i == "ENTRYPOINT"]
    assert entry[-1] == ["runner"]
    final_stage = instructions(dockerfile)
    final_stage = final_stage[max(n for n, (i, _) in enumerate(final_stage) if i == "FROM"):]
    no_index = [n for n, (i, a) in enumerate(final_stage) if i == "ENV" and "PIP_NO_INDEX=1" in a]
    # pip is told there is no index once the image is installed, and nothing runs after that.
    assert no_index and not any(i == "RUN" for i, _ in final_stage[no_index[0]:])
    # Neither the machine's CA bundle nor its settings (the local base's, for CI) are in images/.
    assert not re.search("PIP_CERT|SSL_CERT_FILE|REQUESTS_CA_BUNDLE", dockerfile.read_text())
    # Installs use the pinned file, and the package itself brings nothing unpinned.
    runs = " ".join(a for i, a in instructions(dockerfile) if i == "RUN")
    assert "-r /tmp/requirements.txt" in runs and "--no-deps /src" in runs
    copied = [a for i, a in instructions(dockerfile) if i == "COPY" and "requirements" in a]
    expected = "requirements-gpu.txt" if dockerfile.name == "Dockerfile" else "requirements-cpu.txt"
    assert any(expected in a for a in copied)


@pytest.mark.parametrize("requirements", REQUIREMENTS, ids=lambda p: p.name)
def test_every_requirement_is_pinned_to_an_exact_version(requirements):
    lines = [ln.split("#")[0].strip() for ln in requirements.read_text().splitlines()]
    reqs = [ln for ln in lines if ln and not ln.startswith("-")]
    assert len(reqs) > 20
    pinned = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(\[[a-z0-9,_-]+\])?==[0-9][A-Za-z0-9.+!-]*")
    for line in reqs:
        assert pinned.fullmatch(line), line
    names = [r.split("==")[0].lower() for r in reqs]
    assert len(names) == len(set(names)), "a package pinned twice"


def test_the_cpu_image_holds_the_runners_api_closure_at_the_gpu_images_versions():
    def pins(path: Path) -> dict[str, str]:
        reqs = [ln.strip() for ln in path.read_text().splitlines() if "==" in ln and not ln.startswith("#")]
        return dict(r.split("==") for r in reqs)

    cpu, gpu = pins(IMAGES / "requirements-cpu.txt"), pins(IMAGES / "requirements-gpu.txt")
    assert {k: gpu.get(k) for k in cpu} == cpu  # both images run the same versions
    # The launcher's own libraries stay out of the small image; the runner never imports them.
    for pkg in ("kubernetes", "rich", "jinja2", "huggingface-hub", "torch"):
        assert pkg not in cpu, pkg


def test_the_images_hold_what_their_models_import():
    gpu = (IMAGES / "requirements-gpu.txt").read_text()
    cpu = (IMAGES / "requirements-cpu.txt").read_text()
    for pkg in ("torch==", "transformers==", "accelerate==", "bitsandbytes==", "gguf==", "openai==",
                "google-genai==", "boto3=="):
        assert f"\n{pkg}" in gpu, pkg
    for pkg in ("openai==", "google-genai==", "boto3==", "pydantic=="):
        assert f"\n{pkg}" in cpu, pkg
    assert "\ntorch==" not in cpu  # the small image stays small
    # The pins are the versions this test environment runs, so what is tested is what ships.
    from importlib.metadata import version

    for pkg in ("pydantic", "boto3", "openai", "transformers"):
        assert f"\n{pkg}=={version(pkg)}\n" in gpu + "\n", pkg


def test_the_dockerignore_keeps_the_build_context_small():
    # At the root, where the legacy builder reads it too (it ignores Dockerfile.dockerignore).
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert "*" in ignore and "!runner/" in ignore and "!launcher/" in ignore
    assert not list(IMAGES.glob("*.dockerignore"))


def test_the_entrypoint_works_in_this_environment():
    runner = shutil.which("runner", path=str(Path(sys.executable).parent))
    assert runner, "the `runner` console script is not installed (pip install -e .)"
    done = subprocess.run([runner, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for var in ("MEDBENCH_OUTPUT", "MEDBENCH_RUN_ID", "MEDBENCH_MODEL", "MEDBENCH_SHARDS",
                "JOB_COMPLETION_INDEX"):
        assert var in done.stdout  # the variables the rendered Jobs set


def test_the_runner_service_account_mounts_no_token():
    docs = list(yaml.safe_load_all((REPO / "k8s" / "serviceaccount.yaml").read_text()))
    runner_sa = next(d for d in docs if d["metadata"]["name"] == "medbench-runner")
    assert runner_sa["automountServiceAccountToken"] is False
