"""How many tokens each prompt of a plan will be, before anything runs.

With the model's own tokenizer when its ``tokenizer.json`` is in the local Hugging Face cache
(read with the ``tokenizers`` library: no transformers, no torch); otherwise an approximation of
four characters a token, which says that it is one. Sizing uses the longest prompt (it bounds
the KV cache); the plan uses the sum.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from runner.engine.model_run import requests_for
from runner.plan import ModelTask
from runner.prompts import PMC_LLAMA_TEMPLATE
from runner.questions import Question

#: English prose, medical included, runs close to four characters a token in BPE vocabularies.
CHARS_PER_TOKEN = 4.0
#: What a chat template adds around the messages (role markers, turn tokens), roughly.
TEMPLATE_TOKENS = 16


@dataclass(frozen=True)
class Counter:
    count: Callable[[str], int]
    exact: bool
    name: str  #: "tokenizer of google/medgemma-27b-text-it" or "≈ 4 characters a token"


def approximate(text: str) -> int:
    return max(1, round(len(text) / CHARS_PER_TOKEN)) if text else 0


APPROXIMATE = Counter(approximate, False, f"≈ {CHARS_PER_TOKEN:g} characters a token (no tokenizer cached)")


def counter_for(model_id: str, revision: str | None = None) -> Counter:
    """The model's tokenizer from the local Hugging Face cache, else the approximation."""
    try:
        import huggingface_hub
        from tokenizers import Tokenizer
    except ImportError:
        return APPROXIMATE
    try:
        found = huggingface_hub.try_to_load_from_cache(model_id, "tokenizer.json", revision=revision)
    except ValueError:  # not a Hub repo id ("org/[x]"): nothing of it can be cached
        return APPROXIMATE
    if not isinstance(found, str):
        return APPROXIMATE
    try:
        tok = Tokenizer.from_file(found)
    except Exception:  # noqa: BLE001 - a tokenizer file this tokenizers release cannot read
        return APPROXIMATE

    def count(text: str) -> int:
        return len(tok.encode(text, add_special_tokens=False).ids)

    return Counter(count, True, f"tokenizer of {model_id}")


def prompt_tokens(task: ModelTask, questions: list[Question], counter: Counter) -> list[int]:
    """Tokens of each prompt as the model will receive it: system prompt, question, template."""
    out = []
    pmc = getattr(task.spec, "prompt_format", None) == "pmc-llama"
    overhead = counter.count(PMC_LLAMA_TEMPLATE.format(instruction="", input="")) if pmc else TEMPLATE_TOKENS
    system = counter.count(task.system_prompt) if task.system_prompt else 0
    for req in requests_for(task, questions):
        if task.spec.kind == "embed":
            out.append(counter.count(req.user))
        else:
            out.append(system + counter.count(req.user) + overhead)
    return out
