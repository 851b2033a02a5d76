"""``backend: hf``: a local causal LM through transformers, batched.

Batches are left-padded (decoder-only models continue from the right edge), the engine
hands over prompts sorted by length, and with ``batch_size: auto`` it halves the batch on an
out-of-memory error (raised here as ``OutOfMemory``) instead of failing the model.
"""

from __future__ import annotations

import importlib.util
import os
import time
from typing import Any

# Loading bars from transformers/gguf would tear through the runner's own progress display.
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

from runner.backends.base import BatchGenerator, GenRequest, GenResult  # noqa: E402
from runner.backends.loglik import predictions, score_options, scored_choices  # noqa: E402
from runner.backends.torch_common import (  # noqa: E402
    free_gpu_cache,
    is_oom,
    load_tokenizer,
    model_facts,
    pick_device,
    quantization_config,
    torch_dtype,
)
from runner.backends.weights import resolve_source  # noqa: E402
from runner.errors import BackendUnavailable, OutOfMemory, install_hint  # noqa: E402
from runner.prompts import build_prompt, choose_format  # noqa: E402


class HFBackend(BatchGenerator):
    def __init__(self, task):
        super().__init__(task)
        self.model = None
        self.tokenizer = None
        self.device = "cpu"
        self.adaptive_batch = self.spec.batch_size == "auto"
        self.batch_size = 1 if self.adaptive_batch else int(self.spec.batch_size)
        self.prompt_rule = "unknown"

    # --- loading ---------------------------------------------------------------------

    def preflight(self) -> None:
        spec = self.spec
        resolve_source(spec.id, spec.path)
        if spec.quantization != "none":
            if pick_device(spec.device) != "cuda":
                raise BackendUnavailable(
                    f"{spec.id}: quantization {spec.quantization!r} needs a CUDA GPU (bitsandbytes); "
                    "set quantization: none to run on CPU"
                )
            if importlib.util.find_spec("bitsandbytes") is None:
                raise BackendUnavailable(
                    f"{spec.id}: quantization {spec.quantization!r} needs bitsandbytes: "
                    + install_hint("quant")
                )

    def load(self) -> dict[str, Any]:
        spec = self.spec
        self.device = pick_device(spec.device)
        source = resolve_source(spec.id, spec.path)
        tok = load_tokenizer(spec, source)
        # Decoder-only generation continues from the right edge, so padding goes left.
        tok.padding_side = "left"
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token or tok.unk_token
        kwargs: dict[str, Any] = {"dtype": torch_dtype(spec.dtype, self.device)}
        if spec.revision:
            kwargs["revision"] = spec.revision
        if spec.gguf_file:
            kwargs["gguf_file"] = spec.gguf_file
        qc = quantization_config(spec.quantization, self.device)
        if qc is not None:
            kwargs["quantization_config"] = qc
        if self.device == "cuda":
            kwargs["device_map"] = "auto"
        try:
            model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
        except OSError as e:
            raise BackendUnavailable(f"{spec.id}: cannot load the model from {source}: {e}") from e
        if self.device == "cpu":
            model = model.to("cpu")  # type: ignore[arg-type]  # transformers' stubs miss str devices
        model.eval()
        self.model, self.tokenizer = model, tok
        if self.adaptive_batch:
            self.batch_size = self.auto_batch_size(self.device)
        self.prompt_rule = choose_format(spec.prompt_format, tok, spec.id)
        return {
            **model_facts(model, spec, source, self.device),
            "prompt_rule": self.prompt_rule,
            "batch_size": self.batch_size,
            "scoring": spec.scoring,
        }

    def close(self) -> None:
        self.model = None
        free_gpu_cache()

    # --- prompts ---------------------------------------------------------------------

    def build_prompt(self, req: GenRequest) -> str:
        return build_prompt(self.prompt_rule, self.tokenizer, req.system, req.user, req.templated)

    def _encode(self, prompts: list[str]):
        # A chat template already carries the special tokens (BOS); adding them twice
        # changes the answers.
        special = self.prompt_rule in ("plain", "pmc-llama")
        kwargs: dict[str, Any] = {}
        if self.spec.max_input_tokens:
            kwargs = {"truncation": True, "max_length": self.spec.max_input_tokens}
            self.tokenizer.truncation_side = "left"
        return self.tokenizer(
            prompts, return_tensors="pt", padding=True, add_special_tokens=special, **kwargs
        )

    def prompt_length(self, prompt: Any) -> int:
        return len(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])

    # --- generation ------------------------------------------------------------------

    def _stop_ids(self) -> set[int]:
        ids = self.model.generation_config.eos_token_id
        if ids is None:
            ids = self.tokenizer.eos_token_id
        ids = ids if isinstance(ids, list) else [ids]
        return {i for i in ids if i is not None}

    def _generate_batch(self, requests: list[GenRequest]) -> list[GenResult]:
        gen = self.task.generation
        enc = self._encode([r.prompt for r in requests]).to(self.model.device)
        kwargs: dict[str, Any] = {
            "max_new_tokens": gen.max_new_tokens,
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        if gen.temperature > 0:
            torch.manual_seed(gen.seed)
            kwargs.update(do_sample=True, temperature=gen.temperature)
            if gen.top_p is not None:
                kwargs["top_p"] = gen.top_p
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if gen.stop:
            kwargs.update(stop_strings=gen.stop, tokenizer=self.tokenizer)
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(**enc, **kwargs)
        elapsed = time.perf_counter() - t0
        width = enc["input_ids"].shape[1]
        stop_ids = self._stop_ids()
        results = []
        for row, mask in zip(out, enc["attention_mask"], strict=True):
            new = row[width:].tolist()
            n, finish = len(new), "length"
            for i, tid in enumerate(new):
                if tid in stop_ids:
                    n, finish = i + 1, "stop"
                    break
            else:
                while n and new[n - 1] == self.tokenizer.pad_token_id and n < gen.max_new_tokens:
                    n -= 1
            text = self.tokenizer.decode(new[:n], skip_special_tokens=True).strip()
            if finish == "length" and gen.stop and any(s in text for s in gen.stop):
                finish = "stop"
            results.append(
                GenResult(
                    text=text,
                    finish_reason=finish,
                    input_tokens=int(mask.sum()),
                    output_tokens=n,
                    latency_s=round(elapsed, 4),
                )
            )
        return results

    def _score_batch(self, requests: list[GenRequest]) -> list[GenResult]:
        """``scoring: loglikelihood``: rank each question's options; see runner.backends.loglik."""
        mode = self.task.loglikelihood_choices
        items = [(r.prompt, scored_choices(r.question.options, mode)) for r in requests]
        t0 = time.perf_counter()
        scored = score_options(
            self.model, self.tokenizer, items,
            rows_per_batch=max(1, self.batch_size) * 4,
            max_length=self.spec.max_input_tokens,
        )
        elapsed = round(time.perf_counter() - t0, 4)
        results = []
        for r, s in zip(requests, scored, strict=True):
            if s.error is not None or s.loglikelihoods is None or not r.question.options:
                results.append(GenResult(text=None, error=s.error, latency_s=elapsed))
                continue
            letters = list(r.question.options)
            texts = list(r.question.options.values())
            best, best_norm = predictions(s.loglikelihoods, scored_choices(r.question.options, mode))
            results.append(
                GenResult(
                    text=texts[best],
                    input_tokens=s.context_tokens,
                    latency_s=elapsed,
                    extra={
                        "option_loglikelihoods": s.loglikelihoods,
                        "prediction": letters[best],
                        "prediction_norm": letters[best_norm],
                    },
                )
            )
        return results

    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        try:
            if self.spec.scoring == "loglikelihood":
                return self._score_batch(requests)
            return self._generate_batch(requests)
        except Exception as e:
            if not is_oom(e):
                raise
            free_gpu_cache()
            raise OutOfMemory(f"out of memory with batch size {len(requests)}") from e
