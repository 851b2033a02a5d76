"""What an API server sent is checked here, once, before it is stored, priced or counted.

- Every text in a result (the answer, the finish reason, the error, the model version and any
  other string the backend kept) passes :func:`runner.redact.redact`: a key the server echoes,
  in any case or cut short, becomes ``***``, and a lone surrogate (text no file can hold)
  becomes U+FFFD. Those replaced in the answer are counted in the record,
  ``surrogates_replaced``, and the manifest warns about them.
- Token counts must be possible: a whole number, not negative, and no more than the request
  could use (see :func:`usage_limits`). Any other is recorded as unknown (None), the reason in
  the record's ``usage_rejected``, and the manifest warns; an unknown count prices nothing, so
  the cost is never negative or absurd.
"""

from __future__ import annotations

import json
from typing import Any

from runner.backends.base import GenResult
from runner.backends.wire import whole
from runner.redact import redact, replace_surrogates

# Tokens a request may be billed for beyond the bytes of its prompt: chat-template and role
# markers, a provider's own framing. No tokenizer makes more tokens of text than it has bytes
# (every BPE or byte-fallback token covers one at least).
INPUT_ALLOWANCE = 8192
# Output is bounded by max_new_tokens, but not exactly everywhere: some servers let thinking
# run past it. Four times over plus this much is generous for any of them, and still no
# server's whim prices a request at millions.
OUTPUT_FACTOR = 4
OUTPUT_ALLOWANCE = 32768


def usage_limits(prompt: Any, max_new_tokens: int) -> dict[str, int]:
    """The most tokens of each kind one request could really be billed for."""
    # ASCII JSON: at least as many characters as the prompt has UTF-8 bytes.
    prompt_bytes = len(prompt) if isinstance(prompt, str) else len(json.dumps(prompt))
    most_out = OUTPUT_FACTOR * max_new_tokens + OUTPUT_ALLOWANCE
    return {"input_tokens": prompt_bytes + INPUT_ALLOWANCE, "output_tokens": most_out,
            "reasoning_tokens": most_out}


def _clean(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value


def vet(res: GenResult, prompt: Any, max_new_tokens: int) -> GenResult:
    """``res`` fit to store: texts redacted and valid, token counts possible (else None)."""
    if isinstance(res.text, str):
        res.text, replaced = replace_surrogates(res.text)
        res.text = redact(res.text)
        if replaced:
            res.extra["surrogates_replaced"] = replaced
    res.finish_reason = _clean(res.finish_reason)
    res.error = _clean(res.error)
    res.extra = {k: _clean(v) for k, v in res.extra.items()}
    problems = []
    for name, limit in usage_limits(prompt, max_new_tokens).items():
        value = getattr(res, name)
        if value is None:
            continue
        n = whole(value)
        why = ("is not a whole number" if n is None else "is negative" if n < 0
               else f"is more than the request could use ({limit:,})" if n > limit else None)
        setattr(res, name, n if why is None else None)
        if why is not None:
            problems.append(f"{name} {why}")
    reasoning, output = res.reasoning_tokens, res.output_tokens
    if reasoning is not None and output is not None and reasoning > output:
        res.reasoning_tokens = None
        problems.append("reasoning_tokens is more than output_tokens, which include them")
    if problems:
        res.extra["usage_rejected"] = "; ".join(problems)
    return res
