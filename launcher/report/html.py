"""The report page: metrics (the scoring contract's dict) → one self-contained HTML file.

Everything the page needs (CSS, the script, SVG charts, the answers) is inline, so it opens
from a laptop's disk or an e-mail attachment with no network.

The run, metrics, charts and model comparisons are HTML rendered here. The questions and
answers are data: every question and answer once, as JSON in one
``<script type="application/json">`` element (deflated and base64-encoded when large), from
which the page's script draws one page of questions at a time and searches and filters in
memory, so a 20-model, 1,000-question report loads in seconds and stays small.

Answers are untrusted model output. The Jinja environment autoescapes all HTML; in the data
element every ``<``, ``>``, ``&``, U+2028 and U+2029 is written as a ``\\u`` escape, so no answer
can end the element or be read as code; the script puts text in with ``textContent`` only.
"""

from __future__ import annotations

import base64
import json
import math
import zlib
from importlib import metadata
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from launcher.judge import JudgeView
from launcher.report import charts
from launcher.scoring import metric_spec
from launcher.scoring.metric_spec import MISSING, MODEL_FACTS, num, page_order, pct
from launcher.scoring.stats import MIN_PAIRED_ITEMS
from runner.artefacts.records import now_iso

TEMPLATE = "report.html.j2"
#: Questions shown at once; the page's script renders one page of them at a time.
PAGE_SIZE = 25
#: Page data above this many characters of JSON is stored deflated and base64-encoded.
COMPRESS_ABOVE = 4_000_000


def _signed_pct(v: float | None) -> str:
    return MISSING if v is None else f"{100 * v:+.1f}"


def _pval(v: float | None) -> str:
    if v is None:
        return MISSING
    return "< 0.001" if v < 0.001 else f"{v:.3f}"


def _heat(v: float | None) -> str:
    """A light blue whose depth follows the cosine similarity (0 white, 1 deep)."""
    if v is None or not math.isfinite(v):
        return "transparent"
    t = max(0.0, min(1.0, v))
    return f"rgba(59, 110, 168, {0.08 + 0.5 * t:.2f})"


def _tojson_pretty(v: Any) -> str:
    return json.dumps(v, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("launcher.report", "templates"),
        autoescape=select_autoescape(enabled_extensions=("html", "j2"), default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(pct=pct, signed_pct=_signed_pct, num=num, pval=_pval, heat=_heat,
                       tojson_pretty=_tojson_pretty)
    return env


def _status(answer: dict, gold: str | None) -> tuple[str, str]:
    """(filter status, badge text) of one answer."""
    if answer.get("error"):
        return "error", "error"
    if gold is None:
        return "free", "free text"
    choice = answer.get("choice")
    if choice is None:
        return "noanswer", "no answer"
    if answer.get("correct"):
        return "correct", f"{choice} ✓ correct"
    return "wrong", f"{choice} ✗ wrong"


def _score_line(answer: dict, verdict: list[tuple[str, dict]]) -> str:
    parts = []
    if answer.get("rouge_l") is not None:
        parts.append(f"ROUGE-L {answer['rouge_l']:.2f}")
    if answer.get("similarity") is not None:
        parts.append(f"similarity {answer['similarity']:.2f}")
    if answer.get("latency_s") is not None:
        parts.append(f"{answer['latency_s']:.2f} s")
    if answer.get("finish_reason") == "length":
        parts.append("cut off at max_new_tokens")
    for judge_model, v in verdict:
        if v.get("scores"):
            s = ", ".join(f"{k} {val}" for k, val in v["scores"].items())
            parts.append(f"judge {judge_model}: {s}")
        elif v.get("error"):
            parts.append(f"judge {judge_model}: no verdict ({v['error']})")
    return " · ".join(parts)


def _answer_row(answer: dict | None, gold: str | None, verdicts: list[tuple[str, dict]]) -> list | None:
    """One answer as the page's script reads it: [status, badge, text, error, score line]."""
    if answer is None:
        return None  # the model has no answer to this question at all (not run)
    status, badge = _status(answer, gold)
    return [status, badge, answer.get("text"), answer.get("error"), _score_line(answer, verdicts)]


def page_data(items: list[dict], answer_models: list[str], judges: list[JudgeView]) -> dict:
    """Every question and answer, once, in the compact shape the page's script renders from."""
    out = []
    for it in items:
        answers = it.get("answers") or {}
        rows = []
        for model_dir in answer_models:
            verdicts = [(j.judge_model, j.verdicts[(model_dir, it["index"])])
                        for j in judges if (model_dir, it["index"]) in j.verdicts]
            rows.append(_answer_row(answers.get(model_dir), it.get("gold"), verdicts))
        options = it.get("options")
        out.append({"n": it["index"], "id": it.get("id"), "q": it.get("question"), "c": it.get("context"),
                    "o": list(options.items()) if options else None, "g": it.get("gold"),
                    "r": it.get("reference"), "a": rows})
    return {"models": answer_models, "items": out}


# Inside <script type="application/json"> only "</script" (or "<!--") could end the element
# early; escaping every "<", ">" and "&" rules that out whatever the answers hold. U+2028 and
# U+2029 are escaped too, so the text stays valid even for a reader that evaluates it as JS.
# (These characters only ever occur inside JSON strings, where the escapes mean the same.)
_SCRIPT_ESCAPES = (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                   ("\u2029", "\\u2029"))


def script_json(obj: Any) -> str:
    """JSON text that is safe as the body of a <script type="application/json"> element."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for char, escape in _SCRIPT_ESCAPES:  # str.replace: C speed on tens of megabytes
        text = text.replace(char, escape)
    return text


def data_block(data: dict, *, compress_above: int = COMPRESS_ABOVE) -> tuple[str, str]:
    """(encoding, body) of the page's data element: plain JSON, or zlib + base64 when large.

    Plain JSON keeps a small report readable and searchable as a file; a large one is
    deflated (answers compress about 4:1) so a 20-model, 1,000-question page stays small.
    """
    text = script_json(data)
    if len(text) <= compress_above:
        return "json", text
    packed = zlib.compress(text.encode("utf-8"), 6)
    return "deflate-base64", base64.b64encode(packed).decode("ascii")


def metrics_table(models: list[dict]) -> tuple[list[dict], list[list[dict]]]:
    """The metrics table from the spec: its headers, and each model's cells.

    A cell is ``{"text", "css", "why"}``; an empty one shows "–" and says why (its tooltip),
    from the model's ``missing`` (or the spec itself, for a metrics.json without it).
    """
    metrics = page_order()
    headers = [{"text": c.header, "title": m.description} for m in metrics for c in m.cells]
    rows = []
    for model in models:
        cells = []
        for m in metrics:
            value = model.get(m.name)
            if value is None:
                why = (model.get("missing") or {}).get(m.name) or m.why_missing(str(model.get("scoring")))
                cells += [{"text": MISSING, "css": "num", "why": why} for _ in m.cells]
            else:
                cells += [{"text": c.text(value, model), "css": c.css, "why": None} for c in m.cells]
        rows.append(cells)
    return headers, rows


def _system_prompts(prompts: dict[str, str | None]) -> list[dict]:
    """Group models by identical prompt, so a shared prompt is printed once."""
    groups: dict[str | None, list[str]] = {}
    for model_dir, text in prompts.items():
        groups.setdefault(text, []).append(model_dir)
    return [{"text": text, "models": models} for text, models in groups.items()]


def render_html(metrics: dict, *, parameters: dict[str, dict] | None = None,
                judges: list[JudgeView] | None = None, notes: list[str] | None = None) -> str:
    """The whole page as one string.

    ``metrics`` is ``launcher.scoring.metrics.compute_metrics``'s dict; ``parameters`` maps a
    model folder to the settings recorded in its manifest.
    """
    judges = judges or []
    # A metrics dict from an older scorer may lack some keys.
    models = [{**dict.fromkeys(MODEL_FACTS), **dict.fromkeys(m.name for m in metric_spec.METRICS), **m}
              for m in metrics.get("models") or []]
    run = {"name": "", "run_id": "", "created_at": None, "n_questions": 0, "questions_label": None,
           **(metrics.get("run") or {})}
    answer_models = [m["model_dir"] for m in models if m.get("kind") != "embed"]
    items = metrics.get("items") or []
    encoding, body = data_block(page_data(items, answer_models, judges))
    chart_list = [c for c in (charts.metric_chart(models, m) for m in metric_spec.METRICS) if c is not None]
    headers, rows = metrics_table(models)
    try:
        version = metadata.version("medbench")
    except metadata.PackageNotFoundError:
        version = "dev"
    return environment().get_template(TEMPLATE).render(
        version=version,
        generated_at=now_iso(),
        run=run,
        models=models,
        metric_headers=headers,
        metric_rows=rows,
        parameters=parameters or {},
        system_prompts=_system_prompts(run.get("system_prompts") or {}),
        versions=run.get("versions") or {},
        notes=(notes or []) + list(metrics.get("notes") or []),
        charts=[Markup(c) for c in chart_list],
        pairs=metrics.get("pairs") or [],
        score_pairs=metrics.get("score_pairs") or [],
        agreement=metrics.get("agreement"),
        judges=judges,
        answer_models=answer_models,
        n_items=len(items),
        min_paired=MIN_PAIRED_ITEMS,
        page_size=PAGE_SIZE,
        data_encoding=encoding,
        data=Markup(body),
    )
