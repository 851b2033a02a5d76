"""The house's wiring: modules import only downwards, no import cycles, docs that cannot drift.

Imports are read from the source (every ``import`` and ``from ... import``, inside functions
too), so a cycle hidden behind a lazy import is caught as well.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from runner.config.reference import render_reference, undocumented
from tests.conftest import REPO

PACKAGES = ("runner", "launcher")

# Lowest first. A module may import its own layer and those below it, never one above.
LAYERS = [
    ("runner.redact", "runner.errors", "runner.env", "runner.prompt_file"),
    ("runner.storage", "runner.artefacts.keys", "runner.artefacts.jsonl", "runner.artefacts.records"),
    # A benchmark's catalogue entry and source are config; loading and prompting it use questions.
    ("runner.config", "runner.benchmarks"),
    ("runner.questions", "runner.prompts", "runner.credentials", "runner.benchmarks.prompts",
     "runner.benchmarks.to_questions"),
    ("runner.plan",),
    ("runner.artefacts.stored",),
    ("runner.backends",),
    ("runner.engine",),
    ("runner.embeddings", "runner.main"),
    ("launcher",),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``name`` imports, resolved to the most specific module that exists."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from runner.engine import chunks` imports the module runner.engine.chunks.
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
            # Importing a.b.c first runs a/__init__ and a/b/__init__: those packages are imported
            # too, unless this module sits inside them (then they are already being imported).
            parent = t.rpartition(".")[0]
            while parent:
                if parent in known and parent != name and not name.startswith(parent + "."):
                    out.add(parent)
                parent = parent.rpartition(".")[0]
    return out


def graph() -> dict[str, set[str]]:
    mods = project_modules()
    known = set(mods)
    g = {name: imports_of(name, path, known) for name, path in mods.items()}
    # A package whose __init__ imports nothing of ours (a docstring, a version) adds nothing.
    inert = {name for name, path in mods.items() if path.name == "__init__.py" and not g[name]}
    return {name: deps - inert for name, deps in g.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return found


def layer_of(name: str) -> int:
    best = None
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if name == p or name.startswith(p + "."):
                if best is None or len(p) > best[1]:
                    best = (i, len(p))
    assert best is not None, f"{name} is in no layer: add it to LAYERS"
    return best[0]


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_importing_a_submodule_imports_its_packages(tmp_path):
    # runner.prompts once imported runner.config.base, whose package imports runner.benchmarks,
    # which imports runner.prompts: `import runner.prompts` alone failed on the cycle.
    known = {"p", "p.q", "p.q.r", "p.s"}
    path = tmp_path / "probe.py"
    path.write_text("from p.q.r import x\n", encoding="utf-8")
    assert imports_of("p.s", path, known) == {"p.q.r", "p.q"}  # p: p.s is inside it
    assert imports_of("m", path, known) == {"p.q.r", "p.q", "p"}


def test_every_module_imports_on_its_own():
    """Each module as the first import of a fresh process (what a user's script does)."""
    light = [m for m in sorted(project_modules()) if not m.startswith(("runner.backends", "runner.engine"))]
    code = ("import importlib, sys\n"
            "failed = []\n"
            f"for m in {light!r}:\n"
            "    for k in [k for k in sys.modules if k.split('.')[0] in ('runner', 'launcher')]:\n"
            "        del sys.modules[k]\n"
            "    try:\n"
            "        importlib.import_module(m)\n"
            "    except ImportError as e:\n"
            "        failed.append(f'{m}: {e}')\n"
            "print('\\n'.join(failed))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "", out.stdout


def test_no_module_imports_another_that_imports_it_back():
    found = cycles(graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_modules_import_only_their_own_layer_or_those_below():
    upward = [f"{a} imports {b}" for a, deps in graph().items() for b in deps if layer_of(b) > layer_of(a)]
    assert not upward, "\n".join(upward)


def test_every_config_field_says_what_it_does():
    assert undocumented() == []


def test_the_models_yaml_reference_is_generated_from_the_config():
    committed = (REPO / "docs" / "reference" / "models-yaml.md").read_text(encoding="utf-8")
    assert committed == render_reference(), (
        "docs/reference/models-yaml.md is stale: run "
        "`python -m runner.config.reference > docs/reference/models-yaml.md`")


@pytest.mark.parametrize("doc", sorted(p.relative_to(REPO).as_posix() for p in (REPO / "docs").rglob("*.md")))
def test_links_between_docs_point_at_files_that_exist(doc):
    import re

    path = REPO / doc
    for target in re.findall(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)", path.read_text(encoding="utf-8")):
        assert (path.parent / target).resolve().is_file(), f"{doc} links to missing {target}"


def test_the_readme_stays_a_front_page():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move detail into docs/"


BENCH_SCRIPTS = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "bench").glob("*.py"))


@pytest.mark.parametrize("script", BENCH_SCRIPTS)
def test_every_bench_script_imports_only_modules_that_exist(script):
    # Benchmarks run rarely; a module they import that moved would only show on the day of a run.
    import importlib.util

    tree = ast.parse((REPO / script).read_text(encoding="utf-8"))
    known = set(project_modules())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] in PACKAGES:
                assert name in known, f"{script} imports {name}, which does not exist"
            elif name.split(".")[0] == "tests":
                assert importlib.util.find_spec(name) is not None, f"{script} imports {name}"
