"""A platform engineer who only submits to a cluster installs no torch: the launcher never imports it."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "transformers", "openai", "google.genai", "sentence_transformers")


def test_launcher_cli_and_every_command_import_without_heavy_libraries():
    code = (
        "import sys\n"
        "from launcher.cli import build_parser\n"
        "build_parser()\n"
        "import runner.backends, runner.plan, runner.engine.model_run, runner.storage\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(heavy)\n"
        "sys.exit(1 if heavy else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_help_lists_the_commands():
    proc = subprocess.run([sys.executable, "-m", "launcher.cli", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    for command in ("run", "prompts"):
        assert command in proc.stdout
