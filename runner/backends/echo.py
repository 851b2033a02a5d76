"""``backend: echo``: answers with the prompt it was given. Free, instant, deterministic."""

from __future__ import annotations

import time

from runner.backends.base import BatchGenerator, GenRequest, GenResult
from runner.prompts import plain_prompt


class EchoBackend(BatchGenerator):
    prompt_rule = "plain"

    def __init__(self, task):
        super().__init__(task)
        self.batch_size = self.spec.batch_size

    def build_prompt(self, req: GenRequest) -> str:
        return plain_prompt(req.system, req.user, req.templated)

    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        if self.spec.delay:
            time.sleep(self.spec.delay)
        out = []
        for r in requests:
            words = str(r.prompt).split()
            limit = self.task.generation.max_new_tokens
            text = " ".join(words[:limit])
            out.append(
                GenResult(
                    text=text,
                    finish_reason="length" if len(words) > limit else "stop",
                    input_tokens=len(words),
                    output_tokens=min(len(words), limit),
                    latency_s=0.0,
                )
            )
        return out
