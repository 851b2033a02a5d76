"""The leaderboard page: ``launcher compare``'s result → one self-contained HTML file.

The report's look (its stylesheet, tables, SVG bar charts and answer cards are the same
pieces), no script, nothing loaded from the network: it opens from disk, offline. Answers
and every name are untrusted text, escaped by the Jinja environment's autoescaping.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Any

from markupsafe import Markup

from launcher.report import charts
from launcher.report.html import environment
from launcher.scoring.stats import MIN_PAIRED_ITEMS
from runner.artefacts.records import now_iso
from runner.storage import atomic_write

TEMPLATE = "leaderboard.html.j2"


def _charts(result: dict[str, Any]) -> list[Markup]:
    out = []
    for i, bench in enumerate(result["benchmarks"]):
        bars = []
        for row in result["leaderboard"]:
            c = row["cells"].get(bench)
            if c is None:
                continue
            text = f"{100 * c['accuracy']:.1f}%"
            if c["ci_low"] is not None:
                text += f" [{100 * c['ci_low']:.1f}, {100 * c['ci_high']:.1f}]"
            bars.append(charts.Bar(row["label"], c["accuracy"], c["ci_low"], c["ci_high"],
                                   text=f"{text} n={c['n']}"))
        if bars:
            out.append(charts.hbar_chart(bars, title=f"Accuracy: {bench}", x_max=1.0, axis_label="accuracy",
                                         chart_id=f"chart-accuracy-{i}",
                                         legend="whisker: 95% bootstrap interval"))
    return out


def render_leaderboard(result: dict[str, Any]) -> str:
    board = result["leaderboard"]
    best = {}
    for bench in result["benchmarks"]:
        cells = [(r["cells"][bench]["accuracy"], r["model_key"]) for r in board if bench in r["cells"]]
        if cells:
            best[bench] = max(cells)[1]
    costs = [row for row in board if any(c["cost_usd"] is not None for c in row["cells"].values())]
    try:
        version = metadata.version("medbench")
    except metadata.PackageNotFoundError:
        version = "dev"
    return environment().get_template(TEMPLATE).render(
        version=version, generated_at=now_iso(), runs=result["runs"], benchmarks=result["benchmarks"],
        leaderboard=board, best=best, costs=costs, charts=_charts(result), pairs=result["pairs"],
        flips=result["flips"], shared=result.get("shared"), match=result["match"],
        min_paired=MIN_PAIRED_ITEMS,
    )


def write_leaderboard(result: dict[str, Any], path: Path) -> Path:
    """Write the page whole or not at all (a temporary file renamed into place)."""
    atomic_write(Path(path), render_leaderboard(result).encode("utf-8"))
    return Path(path)
