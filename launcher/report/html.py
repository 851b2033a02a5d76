"""The report page: metrics (the scoring contract's dict) → one self-contained HTML file.

Everything the page needs (CSS, the filter script, SVG charts) is inline, so it opens from a
laptop's disk or an e-mail attachment with no network. Answers are untrusted model output:
the Jinja environment autoescapes everything, and the script reads the page's DOM instead of
embedding data as JavaScript, so no answer text ever lands inside a <script> element.
"""

from __future__ import annotations

import json
import math
from importlib import metadata
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from launcher.judge import JudgeView
from launcher.report import charts
from runner.artefacts.records import now_iso

TEMPLATE = "report.html.j2"
# Every per-model key the template reads; a metrics dict from an older scorer may lack some.
_MODEL_KEYS = ("model_dir", "model", "backend", "kind", "scoring", "status", "n", "answered", "errors",
               "mc", "mc_norm", "latency_s", "answer_words", "output_tokens", "rouge_l", "similarity",
               "cost_usd")


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def _signed_pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:+.1f}"


def _num(v: float | int | None, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:,.{digits}f}"


def _pval(v: float | None) -> str:
    if v is None:
        return "–"
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
    env.filters.update(pct=_pct, signed_pct=_signed_pct, num=_num, pval=_pval, heat=_heat,
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


def _items_view(items: list[dict], answer_models: list[str], judges: list[JudgeView]) -> list[dict]:
    out = []
    for it in items:
        answers = it.get("answers") or {}
        cards, tokens = [], []
        for i, model_dir in enumerate(answer_models):
            a = answers.get(model_dir)
            if a is None:
                status, badge = "noanswer", "not run"
                a = {"text": None}
            else:
                status, badge = _status(a, it.get("gold"))
            tokens.append(f"{i}:{status}")
            verdicts = [(j.judge_model, j.verdicts[(model_dir, it["index"])])
                        for j in judges if (model_dir, it["index"]) in j.verdicts]
            cards.append({
                "model_dir": model_dir, "status": status, "badge": badge, "text": a.get("text"),
                "error": a.get("error"), "scores": _score_line(a, verdicts),
            })
        out.append({**it, "cards": cards, "status_tokens": " ".join(tokens),
                     "options": it.get("options"), "gold": it.get("gold"),
                     "context": it.get("context"), "reference": it.get("reference")})
    return out


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
    models = [{**dict.fromkeys(_MODEL_KEYS), **m} for m in metrics.get("models") or []]
    run = {"name": "", "run_id": "", "created_at": None, "n_questions": 0, **(metrics.get("run") or {})}
    answer_models = [m["model_dir"] for m in models if m.get("kind") != "embed"]
    chart_list = [c for c in (charts.accuracy_chart(models), charts.accuracy_chart(models, "mc_norm"),
                              charts.latency_chart(models), charts.length_chart(models)) if c is not None]
    try:
        version = metadata.version("medbench")
    except metadata.PackageNotFoundError:
        version = "dev"
    return environment().get_template(TEMPLATE).render(
        version=version,
        generated_at=now_iso(),
        run=run,
        models=models,
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
        items=_items_view(metrics.get("items") or [], answer_models, judges),
    )
