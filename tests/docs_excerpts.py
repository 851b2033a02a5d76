"""The blocks of README.md and docs/ that show a command's output, generated so they cannot go stale.

A generated block sits between two markers in the markdown::

    <!-- generated: NAME (python -m tests.docs_excerpts) -->
    ...
    <!-- end generated: NAME -->

``python -m tests.docs_excerpts`` rewrites every such block from its generator below;
``tests/test_docs_excerpts.py`` fails, naming the block, when one differs from what its
generator gives now. The plan excerpts run ``launcher plan examples/oncology-panel.yaml`` itself,
in a subprocess, against the loopback fake of the Hugging Face Hub (tests/fakes/hf_hub.py), which
serves these models' real config.json and safetensors headers: the figures a machine with Hub
access prints, with no tokenizer cached (the ``≈`` counts) and no earlier run in the output.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FILES = ("README.md", "docs/kubernetes.md")
EXAMPLE = "examples/oncology-panel.yaml"
#: Wide enough that no model id folds onto a second line.
COLUMNS = 170
_BLOCK = re.compile(r"(<!-- generated: (?P<name>[\w-]+) \(python -m tests\.docs_excerpts\) -->\n)"
                    r"(?P<body>.*?)"
                    r"(<!-- end generated: (?P=name) -->)", re.DOTALL)


def _run_plan(hub_env: dict[str, str]) -> str:
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, **hub_env, "COLUMNS": str(COLUMNS), "HF_HOME": f"{home}/hf",
               "MEDBENCH_CACHE": f"{home}/medbench", "PYTHONPATH": str(REPO), "NO_COLOR": "1"}
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HF_HUB_CACHE"):
            env.pop(name, None)  # the test suite's, or a developer's own
        done = subprocess.run([sys.executable, "-m", "launcher.cli", "plan", EXAMPLE], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0 or done.stderr.strip():
        raise RuntimeError(f"launcher plan {EXAMPLE} (exit {done.returncode}):\n{done.stderr}")
    return "\n".join(line.rstrip() for line in done.stdout.splitlines()).strip("\n")


def _console(command: str, output: str) -> str:
    return f"```console\n$ {command}\n{output}\n```\n"


def plan_full(hub_env: dict[str, str]) -> str:
    return _console(f"launcher plan {EXAMPLE}", _run_plan(hub_env))


def plan_brief(hub_env: dict[str, str]) -> str:
    """The table alone, the encoders' rows folded into one line (README is a front page)."""
    import yaml

    encoders = [m["id"] for m in yaml.safe_load((REPO / EXAMPLE).read_text())["models"]
                if m.get("backend") == "embed"]
    lines = _run_plan(hub_env).splitlines()
    table = lines[: next(i for i, line in enumerate(lines) if line.lstrip().startswith("total")) + 1]
    header = next(line for line in table if line.lstrip().startswith("model "))
    job = slice(header.index(" job ") + 1, header.index(" input tokens"))
    encoder_rows = [line for line in table if any(line.startswith(f"  {e} ") for e in encoders)]
    rows = [line for line in table if line not in encoder_rows]
    jobs = " / ".join(sorted({line[job].strip() for line in encoder_rows}))
    left_out = f"  … ({len(encoders)} encoders, {jobs} each, left out here)"
    rows.insert(len(rows) - 2, left_out)
    return _console(f"launcher plan {EXAMPLE}", "\n".join(rows))


def speed_tables(_hub_env: dict[str, str]) -> str:
    """Each local backend's speed table, from its descriptor."""
    from runner.config import descriptors

    out = []
    for d in descriptors():
        if d.local is None:
            continue
        limits = [f"≤ {b:g}B" if b != float("inf") else "larger" for b, _ in d.local.gpu_speed]
        quant = ", ".join(f"× {f:g} for `{q}`" for q, f in d.local.quantized_speed.items())
        out.append(f"`backend: {d.name}`, {d.local.speed_source} ({quant}; on CPU "
                   f"{d.local.cpu_speed_per_billion:g} tokens/s for a 1B model, falling with size):\n\n"
                   f"| parameters | {' | '.join(limits)} |\n| --- |{' --- |' * len(limits)}\n"
                   f"| tokens/s | {' | '.join(f'{s:g}' for _, s in d.local.gpu_speed)} |\n")
    return "\n".join(out)


GENERATORS: dict[str, Callable[[dict[str, str]], str]] = {
    "plan-oncology-panel": plan_full,
    "plan-oncology-panel-brief": plan_brief,
    "speed-tables": speed_tables,
}


def blocks(text: str) -> Iterator[re.Match[str]]:
    return _BLOCK.finditer(text)


def regenerate(hub_env: dict[str, str], *, write: bool) -> list[str]:
    """``file: block`` for every block whose text is not what its generator gives now; with
    ``write``, the files are rewritten with the generated text."""
    cache: dict[str, str] = {}
    stale = []
    for name in FILES:
        path = REPO / name
        text = path.read_text(encoding="utf-8")

        def fresh(m: re.Match[str], name: str = name) -> str:
            block = m["name"]
            if block not in GENERATORS:
                raise KeyError(f"{name}: no generator for the block {block!r}")
            if block not in cache:
                cache[block] = GENERATORS[block](hub_env)
            if m["body"] != cache[block]:
                stale.append(f"{name}: {block}")
            return m.group(1) + cache[block] + m.group(4)

        new = _BLOCK.sub(fresh, text)
        if write and new != text:
            path.write_text(new, encoding="utf-8")
    return stale


@contextmanager
def fake_hub() -> Iterator[dict[str, str]]:
    """The loopback Hub with the panel's models; the environment a subprocess needs to use it."""
    from tests.fakes.hf_hub import FakeHub, add_panel

    hub = FakeHub().start()
    add_panel(hub)
    try:
        # No HF token: a gated model (MedGemma) is sized from the metadata the Hub shows everyone.
        yield {"HF_ENDPOINT": hub.url}
    finally:
        hub.stop()


if __name__ == "__main__":
    with fake_hub() as env:
        changed = regenerate(env, write=True)
    print("\n".join(f"rewrote {c}" for c in changed) or "every generated block is current")
