"""Inline SVG charts for the report: no JavaScript library, no network, nothing to download.

Each chart is a horizontal bar chart, one row per model, because model names are long and read
best on the left. A bar may carry a whisker (a range such as a 95% interval) and a dot (a
second statistic such as the median). Every label goes through ``escape``: model names come
from user config and must not be able to break out of the SVG.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup, escape

from launcher.scoring.metric_spec import Metric

ROW_H = 26
BAR_H = 14
LABEL_W = 230
PLOT_W = 420
VALUE_W = 210
TOP = 28
BOTTOM = 30
COLOURS = ("#3b6ea8", "#c0504d", "#4f9a58", "#8064a2", "#d08a2c", "#2c9aa8", "#a83b6e", "#6b7a2c")


@dataclass
class Bar:
    """One model's row: the bar's value, an optional whisker (low, high) and dot."""

    label: str
    value: float | None
    low: float | None = None
    high: float | None = None
    dot: float | None = None
    text: str = ""


def _nice_max(v: float) -> float:
    """The axis end: the smallest 1, 2, 2.5 or 5 times a power of ten at or above ``v``."""
    if v <= 0 or not math.isfinite(v):
        return 1.0
    exp = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if m * exp >= v * (1 - 1e-9):
            return m * exp
    return 10 * exp


def _fmt_tick(v: float) -> str:
    return f"{v:g}" if abs(v) >= 0.01 or v == 0 else f"{v:.1e}"


def _clip(s: str, n: int = 32) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def hbar_chart(bars: list[Bar], *, title: str, x_max: float | None = None, axis_label: str = "",
               legend: str = "", chart_id: str = "") -> Markup:
    """An accessible SVG bar chart (role=img with a <title>), safe to embed in the page."""
    values = [v for b in bars for v in (b.value, b.high, b.dot) if v is not None and math.isfinite(v)]
    top_value = x_max if x_max is not None else _nice_max(max(values, default=0.0))
    width = LABEL_W + PLOT_W + VALUE_W
    height = TOP + ROW_H * max(len(bars), 1) + BOTTOM

    def x(v: float) -> float:
        return LABEL_W + PLOT_W * max(0.0, min(v, top_value)) / top_value

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="{escape(chart_id)}" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<text x="{LABEL_W}" y="16" class="ct">{escape(title)}</text>',
    ]
    plot_bottom = TOP + ROW_H * max(len(bars), 1)
    for i in range(5):
        tv = top_value * i / 4
        tx = x(tv)
        out.append(f'<line x1="{tx:.1f}" y1="{TOP - 4}" x2="{tx:.1f}" y2="{plot_bottom}" class="grid"/>')
        out.append(f'<text x="{tx:.1f}" y="{plot_bottom + 14}" class="tick">{_fmt_tick(tv)}</text>')
    if axis_label:
        out.append(f'<text x="{LABEL_W + PLOT_W / 2}" y="{plot_bottom + 27}" class="axis">'
                   f"{escape(axis_label)}</text>")
    for i, b in enumerate(bars):
        y = TOP + i * ROW_H
        cy = y + ROW_H / 2
        colour = COLOURS[i % len(COLOURS)]
        out.append(f'<g class="row" data-model="{escape(b.label)}">')
        out.append(f'<text x="{LABEL_W - 8}" y="{cy + 4:.1f}" class="lbl"><title>{escape(b.label)}</title>'
                   f"{escape(_clip(b.label))}</text>")
        if b.value is None or not math.isfinite(b.value):
            out.append(f'<text x="{LABEL_W + 4}" y="{cy + 4:.1f}" class="na">n/a</text></g>')
            continue
        w = x(b.value) - LABEL_W
        out.append(f'<rect x="{LABEL_W}" y="{cy - BAR_H / 2:.1f}" width="{w:.1f}" height="{BAR_H}" '
                   f'fill="{colour}" class="bar"/>')
        if b.low is not None and b.high is not None:
            lx, hx = x(b.low), x(b.high)
            out.append(f'<line x1="{lx:.1f}" y1="{cy:.1f}" x2="{hx:.1f}" y2="{cy:.1f}" class="wh"/>')
            for ex in (lx, hx):
                out.append(f'<line x1="{ex:.1f}" y1="{cy - 6:.1f}" x2="{ex:.1f}" y2="{cy + 6:.1f}" '
                           'class="wh"/>')
        if b.dot is not None and math.isfinite(b.dot):
            out.append(f'<circle cx="{x(b.dot):.1f}" cy="{cy:.1f}" r="3.5" class="dot"/>')
        out.append(f'<text x="{LABEL_W + PLOT_W + 8}" y="{cy + 4:.1f}" class="val">{escape(b.text)}</text>')
        out.append("</g>")
    if legend:
        lx = LABEL_W + PLOT_W + VALUE_W - 4
        out.append(f'<text x="{lx}" y="16" class="legend">{escape(legend)}</text>')
    out.append("</svg>")
    return Markup("".join(out))


def metric_chart(models: list[dict], metric: Metric) -> Markup | None:
    """A bar per model that has the metric, as its ``chart`` says (None: no chart, or no model has it)."""
    chart = metric.chart
    rows = [m for m in models if m.get(metric.name)]
    if chart is None or not rows:
        return None
    bars = []
    for m in rows:
        v = m[metric.name]

        def stat(k: str | None, v: Any = v) -> float | None:
            return None if k is None else (v if k == "" else v.get(k))

        low, high = chart.whisker or (None, None)
        bars.append(Bar(m["model_dir"], stat(chart.bar), stat(low), stat(high), stat(chart.dot),
                        text=chart.text(v)))
    return hbar_chart(bars, title=chart.title, x_max=chart.x_max, axis_label=chart.axis, chart_id=chart.id,
                      legend=chart.legend)
