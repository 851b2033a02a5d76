"""The command output README.md and docs/ show is the output the command gives now.

Every block marked ``<!-- generated: NAME ... -->`` is regenerated (tests/docs_excerpts.py: the
plan excerpts by running ``launcher plan examples/oncology-panel.yaml`` against the loopback Hub)
and must equal what the page holds; ``python -m tests.docs_excerpts`` rewrites the stale ones.
"""

from __future__ import annotations

from tests.docs_excerpts import FILES, GENERATORS, REPO, blocks, fake_hub, regenerate


def test_every_generated_block_in_the_docs_is_current():
    with fake_hub() as env:
        stale = regenerate(env, write=False)
    assert not stale, f"stale, rewrite with `python -m tests.docs_excerpts`: {', '.join(stale)}"


def test_the_plan_excerpts_and_speed_tables_are_generated_blocks():
    found = {m["name"] for name in FILES for m in blocks((REPO / name).read_text(encoding="utf-8"))}
    assert found == set(GENERATORS)  # each generator has its block, and no block is unknown
