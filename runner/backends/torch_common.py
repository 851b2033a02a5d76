"""What the local backends on torch share: device, dtype, quantization, out-of-memory, the
tokenizer and the facts a manifest records about loaded weights.

Used by ``hf`` (causal LMs), ``hf_encoder`` (``backend: embed``) and ``vllm``; none of it is a
backend. Imports torch and transformers, so only those backends' modules import it (where the
weights come from is ``runner.backends.weights``, which imports neither).
"""

from __future__ import annotations

import os
from typing import Any

# Loading bars from transformers would tear through the runner's own progress display.
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from runner.errors import BackendUnavailable  # noqa: E402


def pick_device(requested: str) -> str:
    if requested == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailable("device 'cuda' requested but no CUDA GPU is visible")
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def torch_dtype(name: str, device: str):
    if name == "auto":
        # Half precision on CPU is slow and, for some ops, unsupported.
        return "auto" if device == "cuda" else torch.float32
    return getattr(torch, name)


def quantization_config(mode: str, device: str):
    if mode == "none":
        return None
    if device != "cuda":
        raise BackendUnavailable(
            f"quantization {mode!r} needs a CUDA GPU (bitsandbytes); set quantization: none for CPU"
        )
    from transformers import BitsAndBytesConfig

    if mode == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=True,
        )
    return BitsAndBytesConfig(load_in_8bit=True)


def free_gpu_cache() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def is_oom(e: BaseException) -> bool:
    if isinstance(e, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(e, RuntimeError) and "out of memory" in str(e).lower()


def hardware_info(device: str) -> dict[str, Any]:
    info: dict[str, Any] = {"device": device, "torch": torch.__version__}
    if device == "cuda":
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    else:
        info["threads"] = torch.get_num_threads()
    return info


def model_facts(model, spec, source: str, device: str) -> dict[str, Any]:
    """What every local backend records about the weights it loaded, for the manifest."""
    return {
        "revision": getattr(model.config, "_commit_hash", None) or spec.revision or source,
        "hardware": hardware_info(device),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
    }


def load_tokenizer(spec, source: str):
    kwargs: dict[str, Any] = {}
    if spec.revision:
        kwargs["revision"] = spec.revision
    if getattr(spec, "gguf_file", None):
        kwargs["gguf_file"] = spec.gguf_file
    try:
        return AutoTokenizer.from_pretrained(source, **kwargs)
    except OSError as e:
        raise BackendUnavailable(f"{spec.id}: cannot load the tokenizer from {source}: {e}") from e
