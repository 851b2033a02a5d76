"""The Python a user copies from the README and docs/ runs as far as its imports: every name a
snippet imports from medbench exists, and every snippet is valid Python.

The story: a researcher pastes the encoders page's snippet into a notebook. An import of a
function that was renamed or never existed (docs/encoders.md once imported `load_embeddings`)
fails on the first line; this test fails first instead.
"""

from __future__ import annotations

import ast
import importlib
import re

import pytest

from tests.conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def snippets() -> list[tuple[str, str]]:
    out = []
    for page in PAGES:
        for i, m in enumerate(BLOCK.finditer(page.read_text(encoding="utf-8")), 1):
            out.append((f"{page.relative_to(REPO)}#{i}", m.group(1)))
    return out


def test_the_docs_hold_python_snippets():
    assert snippets(), "no ```python block found: the pattern or the docs changed"


@pytest.mark.parametrize(("where", "code"), snippets(), ids=[w for w, _ in snippets()])
def test_every_name_a_snippet_imports_from_medbench_exists(where, code):
    tree = ast.parse(code, filename=where)  # a SyntaxError names the page and block
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in (
                "runner", "launcher"):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{where}: {node.module} has no {alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in ("runner", "launcher"):
                    importlib.import_module(alias.name)


def test_nothing_tells_a_user_to_install_medbench_from_an_index():
    """medbench installs from its checkout: `pip install medbench` or 'medbench[api]' would fetch
    nothing (or someone else's package). Pages and the messages the code prints say
    `pip install -e '.[extra]'` instead."""
    index_install = re.compile(r"pip install (-U |--upgrade )?['\"]?medbench\b")
    sources = PAGES + sorted((REPO / "runner").rglob("*.py")) + sorted((REPO / "launcher").rglob("*.py"))
    for path in sources:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            assert not index_install.search(line), f"{path.relative_to(REPO)}:{n}: {line.strip()}"
    from runner.errors import install_hint

    assert install_hint("api") == "pip install -e '.[api]' in the medbench checkout"
