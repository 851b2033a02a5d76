"""What a benchmark hands the runner: its prompts, and the exact log-likelihood requests.

``prompts_for(source)`` needs no data, so a pod (which reads the staged questions.jsonl and
never the Hub) resolves the same templates as the launcher did.

``loglikelihood_requests(question, recipe)`` goes through the runner's own rendering
(``render_question`` with the template, then the ``plain`` rule with no system prompt), so
the tests that hold it equal to lm-evaluation-harness's requests hold the runner to it too.
"""

from __future__ import annotations

from dataclasses import dataclass

from runner.benchmarks.catalogue import Loglikelihood
from runner.benchmarks.source import BenchmarkSource
from runner.prompts import plain_prompt, render_question
from runner.questions import Question


@dataclass(frozen=True)
class BenchmarkPrompts:
    """The two ways a benchmark is asked.

    ``loglikelihood``: the harness's prompt and continuations, for ``scoring: loglikelihood``
    (used with ``prompt_format: plain`` and no system prompt, as the harness sends it).
    ``instruction_template``: for generative models; ends by asking for ``Answer: X``.
    """

    loglikelihood: Loglikelihood
    instruction_template: str


def prompts_for(source: BenchmarkSource) -> BenchmarkPrompts:
    bench = source.bench
    return BenchmarkPrompts(bench.loglikelihood(source.subject), bench.instruction_template(source.subject))


def continuations(question: Question, recipe: Loglikelihood) -> list[str]:
    """The strings scored after the context, delimiter included (lm-eval's request arguments)."""
    assert question.options, "log-likelihood scoring needs options"
    labels = list(question.options) if recipe.continuations == "letters" else list(question.options.values())
    return [recipe.target_delimiter + x for x in labels]


def loglikelihood_requests(question: Question, recipe: Loglikelihood) -> list[tuple[str, str]]:
    """``(context, continuation)`` per option, as the runner builds them for this benchmark."""
    context = plain_prompt(None, render_question(question, recipe.prompt_template), templated=True)
    return [(context, c) for c in continuations(question, recipe)]
