"""Every file under examples/ works from a fresh clone, which has nothing beside it (no ../shared).

The clone is the repository's files as git sees them (tracked, plus new files not ignored),
copied into an empty folder; commands run there with the same Python, as a user would run them
from a checkout.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

EXAMPLES = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "examples").rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                            capture_output=True)
    if listed.returncode != 0:
        pytest.skip(f"{REPO} is not a git checkout: {listed.stderr.decode().strip()}")
    dest = tmp_path_factory.mktemp("fresh") / "medbench"
    for rel in filter(None, listed.stdout.decode().split("\0")):
        src = REPO / rel
        if src.is_file():  # a tracked file deleted in the working tree is listed too
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel, follow_symlinks=False)
    assert not (dest.parent / "shared").exists()
    return dest


def launcher(clone: Path, *argv: str | Path) -> subprocess.CompletedProcess:
    # `python -m` puts the clone first on sys.path: its own launcher and runner are imported.
    return subprocess.run([sys.executable, "-m", "launcher.cli", *map(str, argv)], cwd=clone,
                          capture_output=True, text=True, timeout=120)


def test_the_clone_runs_its_own_code(clone):
    proc = subprocess.run([sys.executable, "-c", "import launcher, runner; print(launcher.__file__)"],
                          cwd=clone, capture_output=True, text=True, check=True)
    assert Path(proc.stdout.strip()).is_relative_to(clone)


@pytest.mark.parametrize("example", EXAMPLES)
def test_every_example_renders_from_a_fresh_clone(clone, example, tmp_path):
    proc = launcher(clone, "render", example, "-o", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "error" not in proc.stderr.lower()
    config = yaml.safe_load((clone / example).read_text())
    jobs = [yaml.safe_load(p.read_text()) for p in sorted(tmp_path.glob("*.yaml"))]
    assert [j["kind"] for j in jobs] == ["Job"] * len(config["models"])


def test_the_pubmedqa_example_reads_the_sample_shipped_with_the_repository(clone):
    config = yaml.safe_load((clone / "examples" / "pubmedqa-smollm2.yaml").read_text())
    questions = (clone / "examples" / config["questions"]).resolve()
    assert questions.is_relative_to(clone)
    assert (questions.parent / "PUBMEDQA_LICENSE").read_text().startswith("MIT License")
    assert 0 < questions.stat().st_size < 1_000_000


def test_the_api_bench_runs_from_a_fresh_clone(clone):
    proc = subprocess.run([sys.executable, "bench/bench_api.py", "--n", "4", "--rpm-n", "3"], cwd=clone,
                          capture_output=True, text=True, timeout=120)
    # 4 questions cannot reach the 20x target: PASS or MISS, but the bench itself must run.
    assert proc.returncode in (0, 1), proc.stderr
    assert f"4 questions from {clone / 'questions' / 'pubmedqa_sample.jsonl'}" in proc.stdout
    assert "concurrency 32:" in proc.stdout and "requests_per_minute 600" in proc.stdout
