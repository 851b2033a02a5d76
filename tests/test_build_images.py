"""scripts/build-images.sh given bad input, or no Docker: one line, a non-zero exit.

These need no Docker daemon. What it does with one (a base without Python, a failed build, an
image over its budget: nothing half-built is tagged) is in tests/test_containers.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.conftest import REPO

SCRIPT = REPO / "scripts" / "build-images.sh"


def build_images(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=1800,
                          env={**os.environ, **(env or {})})


def one_line(done: subprocess.CompletedProcess) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("build-images: "), lines[0]
    return lines[0]


@pytest.mark.parametrize("args, says", [
    (["--cpu", "--colour"], "unknown argument '--colour'"),
    (["--base"], "--base needs a value"),
    (["--tag", "v1", "--tag-by-inputs"], "--tag and --tag-by-inputs exclude each other"),
    (["--tag", "has space"], "--tag 'has space' is not a Docker tag"),
])
def test_bad_arguments_get_one_line_and_exit_2(args, says):
    done = build_images(*args)
    assert done.returncode == 2 and says in one_line(done)
    assert "usage: bash scripts/build-images.sh" in done.stderr


def test_without_docker_installed_it_says_so(tmp_path):
    # A PATH with the script's tools but no docker.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "sed", "grep", "head", "tail", "cut", "mktemp", "rm", "cat"):
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    done = build_images("--cpu", env={"PATH": str(bin_dir)})
    assert done.returncode == 1 and "docker is not installed" in one_line(done)


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker client")
def test_without_a_docker_daemon_it_says_so(tmp_path):
    done = build_images("--cpu", env={"DOCKER_HOST": f"unix://{tmp_path}/no-daemon.sock"})
    line = one_line(done)
    assert done.returncode == 1 and "no Docker daemon answers" in line and "start dockerd" in line
