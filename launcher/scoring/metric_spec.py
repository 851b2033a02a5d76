"""The per-model metrics, each defined once: what it measures, how it is computed, how it is shown.

``METRICS`` is the one ordered list. From it come a model's entries in metrics.json
(``models[i][name]``), the columns of metrics.csv (``name``, or ``name_<stat>`` for a metric of
several numbers, in this order), the report's metrics table (each metric's ``cells``), its
charts (``chart``) and the reason an empty cell gives (``models[i]["missing"][name]``).

A metric reads one model's answers as aligned columns (``Answers``). ``compute`` picks the
values to count from those columns; ``aggregate`` turns them into what is stored (a number, or
a few named ``stats``). A model the metric does not apply to, or one with nothing to count,
gets ``None`` and a reason, never a silent dash.

Adding a metric is one entry below and a test (tests/test_metric_spec.py adds one in a test
alone and finds it in every output). ``python -m launcher.scoring.metric_spec`` prints the
table of docs/report.md; a test keeps the page in step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from launcher.scoring.stats import bootstrap_ci

#: A model's facts in metrics.json, before its metrics (not metrics: nothing is computed).
MODEL_FACTS = ("model_dir", "model", "backend", "kind", "scoring", "status", "n")
#: The outcomes that count for accuracy: a multiple-choice answer with a gold option.
GRADED = ("correct", "wrong", "no_answer")
SCORINGS = ("generate", "loglikelihood", "embed")


def outcome(choice: str | None, gold: str | None, has_options: bool, error: str | None,
            text: str | None) -> str:
    """How one answer is graded.

    ``error``, ``empty`` (no text), ``free_text`` (no options), ``ungraded`` (options, no gold),
    ``no_answer`` (no option found: not correct, counted apart from wrong), ``correct``, ``wrong``.
    """
    if error is not None:
        return "error"
    if text is None:
        return "empty"
    if not has_options:
        return "free_text"
    if gold is None:
        return "ungraded"
    if choice is None:
        return "no_answer"
    return "correct" if choice == gold else "wrong"


@dataclass(frozen=True)
class Answers:
    """One model's answers as aligned columns, one row per answer recorded, in question order.

    Numbers are float64, NaN where the answer has none; ``outcome_norm`` is acc_norm's outcome
    for ``scoring: loglikelihood`` (``""`` otherwise).
    """

    scoring: str
    outcome: np.ndarray
    outcome_norm: np.ndarray
    latency_s: np.ndarray
    output_tokens: np.ndarray
    cost_usd: np.ndarray
    words: np.ndarray
    rouge_l: np.ndarray
    similarity: np.ndarray

    @classmethod
    def of(cls, scoring: str, columns: Mapping[str, Sequence[Any]]) -> Answers:
        """From lists (None: missing); ``outcome`` is required, a column left out is all missing."""
        n = len(columns["outcome"])
        out: dict[str, np.ndarray] = {}
        for name in ANSWER_FIELDS:
            given = columns.get(name)
            if name in ("outcome", "outcome_norm"):
                out[name] = np.array(["" if v is None else v for v in given or [None] * n], dtype=object)
            else:
                out[name] = np.array([np.nan if v is None else v for v in given or [None] * n],
                                     dtype=np.float64)
        return cls(scoring=scoring, **out)

    @property
    def ok(self) -> np.ndarray:
        """The answers that did not fail (an empty one included)."""
        return self.outcome != "error"


ANSWER_FIELDS = tuple(f.name for f in fields(Answers) if f.name != "scoring")


@dataclass(frozen=True)
class Settings:
    """How intervals are resampled (``--bootstrap``; 0: no interval)."""

    bootstrap: int = 1000
    seed: int = 0


# --- aggregates: the values a metric computed -> what it stores --------------------------------


@dataclass(frozen=True)
class Count:
    """How many answers ``compute`` marked (always a number, 0 included)."""

    stats: tuple[str, ...] = ()

    def __call__(self, values: np.ndarray, settings: Settings) -> int:
        return int(np.count_nonzero(values))


@dataclass(frozen=True)
class Mean:
    stats: tuple[str, ...] = ()

    def __call__(self, values: np.ndarray, settings: Settings) -> float | None:
        return float(np.mean(values)) if len(values) else None


@dataclass(frozen=True)
class Total:
    stats: tuple[str, ...] = ()

    def __call__(self, values: np.ndarray, settings: Settings) -> float | None:
        # Summed in order as Python does: the figure metrics.json always held, to the last bit.
        return float(sum(values.tolist())) if len(values) else None


@dataclass(frozen=True)
class Summary:
    """``mean``, ``total`` and percentiles (``p50``, ``p95``) of the values."""

    stats: tuple[str, ...] = ("mean", "p50")

    def __call__(self, values: np.ndarray, settings: Settings) -> dict[str, float] | None:
        if not len(values):
            return None
        out = {}
        for k in self.stats:
            if k == "mean":
                out[k] = float(values.mean())
            elif k == "total":
                out[k] = float(values.sum())
            else:
                out[k] = float(np.percentile(values, int(k[1:])))
        return out


@dataclass(frozen=True)
class Accuracy:
    """Counts and accuracy of graded outcomes, with a percentile-bootstrap interval."""

    stats: tuple[str, ...] = ("n", "correct", "wrong", "no_answer", "accuracy", "ci_low", "ci_high")

    def __call__(self, outcomes: np.ndarray, settings: Settings) -> dict[str, Any] | None:
        if not len(outcomes):
            return None
        right = outcomes == "correct"
        lo, hi = bootstrap_ci(right.astype(np.float64), n_boot=settings.bootstrap, seed=settings.seed)
        n = len(outcomes)
        return {"n": n, "correct": int(right.sum()), "wrong": int(np.count_nonzero(outcomes == "wrong")),
                "no_answer": int(np.count_nonzero(outcomes == "no_answer")), "accuracy": int(right.sum()) / n,
                "ci_low": lo, "ci_high": hi}


Aggregate = Count | Mean | Total | Summary | Accuracy


# --- how a value is shown ---------------------------------------------------------------------

#: An empty cell's text (its tooltip says why).
MISSING = "–"


def pct(v: float | None) -> str:
    return MISSING if v is None else f"{100 * v:.1f}%"


def num(v: float | int | None, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return MISSING
    return f"{v:,.{digits}f}"


@dataclass(frozen=True)
class Cell:
    """One column of the report's metrics table: its header and the text of a value (never None)."""

    header: str
    text: Callable[[Any, Mapping[str, Any]], str]  # (the metric's value, the model's block)
    css: str = "num"


@dataclass(frozen=True)
class Chart:
    """A bar per model: ``bar`` (a stat, or "" for a one-number metric), an optional whisker and dot."""

    id: str
    title: str
    axis: str
    legend: str
    text: Callable[[Any], str]  # the figure printed beside the bar
    bar: str = ""
    whisker: tuple[str, str] | None = None
    dot: str | None = None
    x_max: float | None = None


@dataclass(frozen=True)
class Metric:
    """One per-model metric (see the module docstring)."""

    name: str  # metrics.json's key; metrics.csv's column, or the prefix of its columns
    label: str  # how the page and the docs name it
    description: str  # one line: what it measures (the docs' table, the header's tooltip)
    compute: Callable[[Answers], np.ndarray]  # the values to aggregate, one per answer counted
    aggregate: Aggregate
    higher_is_better: bool | None
    cells: tuple[Cell, ...]
    scorings: frozenset[str] = frozenset({"generate", "loglikelihood"})  # the models it applies to
    missing: str = "nothing to count"  # why a model it applies to can have no value
    chart: Chart | None = None
    # The page's table shows this metric's cells before that metric's (None: in METRICS order).
    page_before: str | None = None

    @property
    def stats(self) -> tuple[str, ...]:
        return self.aggregate.stats

    @property
    def columns(self) -> tuple[str, ...]:
        """Its columns in metrics.csv."""
        return tuple(f"{self.name}_{s}" for s in self.stats) if self.stats else (self.name,)

    def value(self, answers: Answers, settings: Settings) -> Any:
        """What the model gets: None when the metric does not apply to it or nothing counted."""
        if answers.scoring not in self.scorings:
            return None
        return self.aggregate(self.compute(answers), settings)

    def flat(self, value: Any) -> dict[str, Any]:
        """Its metrics.csv cells."""
        if not self.stats:
            return {self.name: value}
        return {col: value.get(s) if value else None for col, s in zip(self.columns, self.stats, strict=True)}

    def why_missing(self, scoring: str, off: Mapping[str, str] | None = None) -> str:
        """Why a model of ``scoring`` has no value (``off``: metrics switched off for the run, and why)."""
        if scoring not in self.scorings:
            return f"{self.label}: does not apply to scoring: {scoring} models"
        if off and self.name in off:
            return f"{self.label}: {off[self.name]}"
        return f"{self.label}: {self.missing}"


def _known(x: np.ndarray) -> np.ndarray:
    return x[~np.isnan(x)]


def _graded(x: np.ndarray) -> np.ndarray:
    return x[np.isin(x, GRADED)]


def _accuracy_text(v: Mapping[str, Any], model: Mapping[str, Any]) -> str:
    return f"{pct(v['accuracy'])} [{pct(v['ci_low'])}, {pct(v['ci_high'])}]"


def _counts_text(v: Mapping[str, Any], model: Mapping[str, Any]) -> str:
    return f"{v['correct']} / {v['wrong']} / {v['no_answer']}"


def _accuracy_bar(v: Mapping[str, Any]) -> str:
    lo, hi, acc = ("n/a" if v.get(k) is None else f"{100 * v[k]:.1f}%"
                   for k in ("ci_low", "ci_high", "accuracy"))
    return f"{acc} [{lo}, {hi}]"


def _accuracy_chart(name: str, title: str) -> Chart:
    return Chart(id=f"chart-{name}", title=title, axis="accuracy", legend="whisker: 95% bootstrap interval",
                 text=_accuracy_bar, bar="accuracy", whisker=("ci_low", "ci_high"), x_max=1.0)


def _reference_score(name: str, label: str, description: str) -> Metric:
    """The mean of a free-text answer's score against its question's reference (an Answers column)."""
    return Metric(name=name, label=label, description=description,
                  compute=lambda a: _known(getattr(a, name)), aggregate=Mean(), higher_is_better=True,
                  cells=(Cell(label, lambda v, m: num(v, 3)),), scorings=_GENERATE,
                  missing="no answered question has a reference answer",
                  # The page has always shown them beside accuracy; metrics.csv near its end.
                  page_before="latency_s")


_ALL = frozenset(SCORINGS)
_GENERATE = frozenset({"generate"})
_NO_GOLD = "no multiple-choice question with a gold answer was answered"

#: In metrics.csv's column order (which users' scripts may rely on): add a new metric at the end.
METRICS: tuple[Metric, ...] = (
    Metric(
        name="answered", label="answered", description="answers without an error (of the run's questions)",
        compute=lambda a: a.ok, aggregate=Count(), higher_is_better=True,
        cells=(Cell("answered", lambda v, m: f"{v} / {m['n']}"),), scorings=_ALL),
    Metric(
        name="errors", label="errors", description="answers that failed (a timeout, an API error, ...)",
        compute=lambda a: ~a.ok, aggregate=Count(), higher_is_better=False,
        cells=(Cell("errors", lambda v, m: str(v)),), scorings=_ALL),
    Metric(
        name="mc", label="accuracy",
        description="multiple-choice accuracy over the answers given (\"no option found\" counts as not "
                    "correct, apart from wrong), with a 95% bootstrap interval over questions",
        compute=lambda a: _graded(a.outcome), aggregate=Accuracy(), higher_is_better=True,
        cells=(Cell("accuracy [95% CI]", _accuracy_text, "num acc"),
               Cell("correct / wrong / no answer", _counts_text)),
        missing=_NO_GOLD, chart=_accuracy_chart("mc", "Multiple-choice accuracy")),
    Metric(
        name="mc_norm", label="acc_norm",
        description="accuracy of the option with the largest log-likelihood per character "
                    "(lm-eval's acc_norm)",
        compute=lambda a: _graded(a.outcome_norm), aggregate=Accuracy(), higher_is_better=True,
        cells=(Cell("acc_norm", _accuracy_text),), scorings=frozenset({"loglikelihood"}),
        missing=_NO_GOLD, chart=_accuracy_chart("mc_norm", "Accuracy (normalised by length)")),
    Metric(
        name="latency_s", label="latency (s)",
        description="seconds per answer: mean, median, 95th percentile",
        compute=lambda a: _known(a.latency_s[a.ok]), aggregate=Summary(("mean", "p50", "p95")),
        higher_is_better=False,
        cells=(Cell("latency mean / p50 / p95 (s)",
                    lambda v, m: f"{num(v['mean'])} / {num(v['p50'])} / {num(v['p95'])}"),),
        missing="no answer recorded its latency",
        chart=Chart(id="chart-latency", title="Latency per answer", axis="seconds",
                    legend="bar: mean; whisker: median to 95th percentile",
                    text=lambda v: f"mean {v.get('mean', 0):.2f} s, p95 {v.get('p95', 0):.2f} s",
                    bar="mean", whisker=("p50", "p95"))),
    Metric(
        name="answer_words", label="answer length (words)", description="words per answer: mean and median",
        compute=lambda a: _known(a.words[a.ok]), aggregate=Summary(("mean", "p50")), higher_is_better=None,
        cells=(Cell("words mean / median", lambda v, m: f"{num(v['mean'], 0)} / {num(v['p50'], 0)}"),),
        scorings=_GENERATE, missing="no answer has text",
        chart=Chart(id="chart-length", title="Answer length", axis="words", legend="bar: mean; dot: median",
                    text=lambda v: f"mean {v.get('mean', 0):.0f}, median {v.get('p50', 0):.0f} words",
                    bar="mean", dot="p50")),
    Metric(
        name="output_tokens", label="output tokens",
        description="tokens generated per answer (mean) and in all",
        compute=lambda a: _known(a.output_tokens[a.ok]), aggregate=Summary(("mean", "total")),
        higher_is_better=None, cells=(Cell("output tokens", lambda v, m: num(v["total"], 0)),),
        scorings=_GENERATE, missing="no answer recorded its tokens"),
    _reference_score("rouge_l", "ROUGE-L",
                     "mean ROUGE-L F1 of the answers against the questions' reference answers"),
    _reference_score("similarity", "similarity",
                     "mean cosine similarity of the answers' and the reference answers' embeddings"),
    Metric(
        name="cost_usd", label="cost (USD)",
        description="what the answers cost, failed ones included, for API models with prices",
        compute=lambda a: _known(a.cost_usd), aggregate=Total(), higher_is_better=False,
        cells=(Cell("cost (USD)", lambda v, m: num(v, 4)),),
        missing="no answer recorded a cost (no prices set)"),
)


def page_order(metrics: Sequence[Metric] | None = None) -> list[Metric]:
    """The metrics in the order of the page's table (METRICS order, ``page_before`` moved up)."""
    metrics = list(METRICS if metrics is None else metrics)
    out = [m for m in metrics if m.page_before is None]
    for m in metrics:
        if m.page_before is not None:
            at = next((i for i, o in enumerate(out) if o.name == m.page_before), len(out))
            out.insert(at, m)
    return out


def model_values(answers: Answers, settings: Settings,
                 off: Mapping[str, str] | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """Every metric's value for one model's answers, and why each missing one is missing."""
    values: dict[str, Any] = {}
    missing: dict[str, str] = {}
    for m in METRICS:
        values[m.name] = m.value(answers, settings)
        if values[m.name] is None:
            missing[m.name] = m.why_missing(answers.scoring, off)
    return values, missing


def markdown() -> str:
    """The metrics as the table docs/report.md shows."""
    lines = ["| metric (metrics.json) | metrics.csv | what it measures | models | better |",
             "| --- | --- | --- | --- | --- |"]
    for m in METRICS:
        cols = ", ".join(f"`{c}`" for c in m.columns)
        models = ", ".join(s for s in SCORINGS if s in m.scorings)
        better = {True: "higher", False: "lower", None: "–"}[m.higher_is_better]
        name = f"`{m.name}`" + (f" ({m.label})" if m.label != m.name else "")
        lines.append(f"| {name} | {cols} | {m.description} | {models} | {better} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
