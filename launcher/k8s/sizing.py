"""A Job's GPUs, memory and CPU, sized from the model it runs.

For a local generative model (a backend whose descriptor says ``sized="gpus"``: hf, vllm)::

    GPU memory needed = weights at the chosen dtype or quantization
                      + KV cache   (sequences × (longest prompt + max_new_tokens) × bytes per token)
                      + overhead   (10 % of the weights for activations and allocator slack,
                                    1 GiB per GPU for the CUDA context)

where the sequences are the backend's batch (``batch_size``, or what ``auto`` is on a GPU or a
CPU, from its descriptor's ``LocalProfile``), capped by the profile's ``kv_sequences``: an
engine that schedules inside whatever KV cache is left (vLLM) needs room for some sequences at
once, not for a whole chunk. The number of GPUs is the smallest power of two whose memory
(``gpu_memory``, from ``gpu_type``, default 80Gi; 92 % of it usable) holds that: powers of two
are what tensor parallel needs, and what ``device_map="auto"`` splits evenly. The pod's own
memory holds the weights while they load (at 16 bits when quantizing: bitsandbytes quantizes as
the shards reach the GPU) plus the runtime and ``/dev/shm``, which counts against the memory
limit; CPU is 4 plus 4 per GPU. ``/dev/shm`` is 1Gi for one GPU and 4Gi per GPU under tensor
parallel (NCCL).

Encoders (``sized="memory"``) stay on CPU and get memory for their weights; API and echo models
get ``cluster.cpu_resources``. The user always has the last word: ``gpus:`` (``gpus: 0`` runs an
hf model on CPU), ``cluster.gpu_resources`` and a model's ``resources:`` replace what is
computed, with a warning when what they ask for cannot hold the weights.

Everything here is arithmetic on a ``Weights`` (``launcher.k8s.weights``): no I/O. ``size_plan``
is where the lookups happen.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from runner.config import ClusterConfig, Placement, Resources, descriptor
from runner.config.base import DEFAULT_GPU_TYPE, GPU_TYPES
from runner.plan import ModelTask, Plan

from .placement import merged_placement
from .weights import Lookup, Weights, find_weights, params_from_id

GiB = 1024**3
USABLE = 0.92
OVERHEAD = 0.10
CUDA_CONTEXT = 1 * GiB
RUNTIME = 6 * GiB  # Python, torch and the CUDA libraries, the tokenizer, the batch on the host
MAX_GPUS = 64
NODE_GPUS = 8
#: A generative model nothing could size: the defaults medbench always used for a GPU pod.
DEFAULT_GPU_POD = Resources(cpu="8", memory="64Gi")
DEFAULT_ENCODER_MEMORY = "4Gi"
_BYTES = {"float32": 4.0, "float16": 2.0, "bfloat16": 2.0, "float64": 8.0}
# bitsandbytes: 4.13 bits a weight with double-quantised block constants; 8.06 for int8. The
# embeddings (and an untied lm_head) stay at 16 bits.
_QUANT_BYTES = {"4bit": 0.52, "8bit": 1.01}
_QUANT_BYTES_NO_ARCH = {"4bit": 0.6, "8bit": 1.1}


@dataclass(frozen=True)
class JobSize:
    """What a model's Job asks of the cluster, and why."""

    gpus: int
    cpu: str | None
    memory: str | None
    shm: str | None = None  #: /dev/shm size limit; GPU pods only
    source: str = ""  #: where the model's size came from ("" when not sized)
    summary: str = ""  #: one line for render and plan
    warnings: tuple[str, ...] = ()
    facts: dict[str, Any] = field(default_factory=dict)  #: recorded in the Job (MEDBENCH_SIZING)
    gated: bool | None = None  #: the Hub says the repo is gated (its pods need the HF token)

    @property
    def sized(self) -> bool:
        return bool(self.facts)

    def facts_json(self) -> str:
        return json.dumps(self.facts, sort_keys=True, separators=(",", ":"))


def gib(n: float) -> str:
    return f"{n / GiB:.1f} GiB"


def quantity_bytes(q: str) -> int:
    """``64Gi`` -> bytes (the config validated the form already)."""
    units = {"Ki": 1024, "Mi": 1024**2, "Gi": GiB, "Ti": 1024**4, "Pi": 1024**5, "Ei": 1024**6,
             "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}
    for suffix in sorted(units, key=len, reverse=True):
        if q.endswith(suffix):
            return int(float(q[: -len(suffix)]) * units[suffix])
    return int(float(q))


def _gi(n_bytes: float) -> str:
    return f"{max(1, math.ceil(n_bytes / GiB))}Gi"


def gpu_type_of(placement: Placement) -> str:
    return placement.gpu_type or DEFAULT_GPU_TYPE


def gpu_memory_bytes(placement: Placement) -> int:
    if placement.gpu_memory:
        return quantity_bytes(placement.gpu_memory)
    return GPU_TYPES[gpu_type_of(placement)].memory_gib * GiB


def kv_bytes_per_token(w: Weights, kv_dtype_bytes: float) -> float:
    if w.arch is not None:
        a = w.arch
        return 2 * a.layers * a.kv_heads * a.head_dim * kv_dtype_bytes
    # No config: a Llama-shaped model with full multi-head attention (an over-estimate for GQA
    # models): P ≈ 12·L·H² with H ≈ 128·L gives H ≈ (128·P/12)^(1/3).
    hidden = (128 * w.params / 12) ** (1 / 3)
    return 2 * (hidden / 128) * hidden * kv_dtype_bytes


@dataclass(frozen=True)
class Need:
    """The arithmetic of one model, kept for the summary and the Job's record."""

    load: str  #: "bfloat16", "float32", "4bit", ...
    weights: float
    host_weights: float  #: the weights as they pass through host memory while loading
    kv: float
    batch: int  #: the backend's batch (chunk) size
    sequences: int  #: sequences whose KV cache the Job holds at once
    seq: int

    def gpu_total(self, gpus: int) -> float:
        return self.weights + self.kv + OVERHEAD * self.weights + CUDA_CONTEXT * gpus


def _need(task: ModelTask, w: Weights, on_gpu: bool, longest_prompt: int) -> Need:
    spec = task.spec
    dtype = getattr(spec, "dtype", "auto")
    quant = getattr(spec, "quantization", "none") if on_gpu else "none"
    checkpoint = w.dtype or "bfloat16"
    if dtype == "auto":
        dtype = checkpoint if on_gpu else "float32"
    compute = _BYTES.get(dtype, 2.0)
    if quant in _QUANT_BYTES:
        a = w.arch
        if a is not None and a.vocab:
            unquantized = a.vocab * a.hidden * (1 if a.tied else 2)
            weights = (w.params - unquantized) * _QUANT_BYTES[quant] + unquantized * 2
        else:
            weights = w.params * _QUANT_BYTES_NO_ARCH[quant]
        load, host = quant, w.params * 2.0
        compute = 2.0
    elif dtype == checkpoint and w.checkpoint_bytes:
        weights = host = float(w.checkpoint_bytes)
        load = dtype
    else:
        weights = host = w.params * compute
        load = dtype
    profile = descriptor(spec.backend).local
    batch_setting = getattr(spec, "batch_size", "auto")
    if isinstance(batch_setting, int):
        batch = batch_setting
    elif profile is not None:
        batch = profile.auto_batch_gpu if on_gpu else profile.auto_batch_cpu
    else:
        batch = 1
    sequences = profile.kv_batch(batch) if profile is not None else batch
    if getattr(spec, "scoring", "generate") == "loglikelihood":
        seq = longest_prompt + 64  # the prompt and one option's continuation; nothing generated
    else:
        seq = longest_prompt + task.generation.max_new_tokens
    if w.arch is not None and w.arch.max_positions:
        seq = min(seq, int(w.arch.max_positions))
    kv = sequences * seq * kv_bytes_per_token(w, compute)
    return Need(load=load, weights=weights, host_weights=host, kv=kv, batch=batch, sequences=sequences,
                seq=seq)


def _pow2_gpus(need: Need, per_gpu: int) -> int:
    n = 1
    while n < MAX_GPUS and n * per_gpu * USABLE < need.gpu_total(n):
        n *= 2
    return n


def _shm(gpus: int) -> str:
    return "1Gi" if gpus == 1 else f"{4 * gpus}Gi"


def _merge(base: Resources, *overs: Resources | None) -> tuple[Resources, list[str]]:
    """``base`` with each override's keys laid over it; the names of the keys replaced."""
    cpu, memory, replaced = base.cpu, base.memory, []
    for o in overs:
        if o is None:
            continue
        if o.cpu:
            cpu = o.cpu
            replaced.append("cpu")
        if o.memory:
            memory = o.memory
            replaced.append("memory")
    return Resources(cpu=cpu, memory=memory), replaced


def size_task(task: ModelTask, cluster: ClusterConfig, placement: Placement, lookup: Lookup | None,
              longest_prompt: int) -> JobSize:
    """The Job size of one model (see the module docstring)."""
    spec = task.spec
    d = descriptor(spec.backend)
    explicit_gpus = spec.gpus
    if d.sized is None:
        gpus = explicit_gpus or 0
        base = cluster.cpu_resources if gpus == 0 else DEFAULT_GPU_POD
        res, _ = _merge(base, cluster.gpu_resources if gpus else None, spec.resources)
        return JobSize(gpus=gpus, cpu=res.cpu, memory=res.memory, shm=_shm(gpus) if gpus else None)

    weights = lookup.weights if lookup else None
    device = getattr(spec, "device", "auto")
    if d.sized == "memory":
        gpus = explicit_gpus or 0
    elif explicit_gpus is not None:
        gpus = explicit_gpus
    elif device == "cpu":
        gpus = 0
    else:
        gpus = -1  # to be sized
    gpu_type, per_gpu = gpu_type_of(placement), gpu_memory_bytes(placement)
    warnings: list[str] = []

    if weights is None:
        why = "; ".join(lookup.notes) if lookup and lookup.notes else "no metadata, and its id names no size"
        if d.sized == "memory" and gpus == 0:
            base = Resources(cpu="2", memory=DEFAULT_ENCODER_MEMORY)
        else:
            gpus = 1 if gpus < 0 else gpus
            base = DEFAULT_GPU_POD
        res, replaced = _merge(base, cluster.gpu_resources if gpus else None, spec.resources)
        chose_all = "memory" in replaced and (explicit_gpus is not None or d.sized == "memory")
        if not chose_all:  # what the user wrote themselves needs no warning
            warnings.append(
                f"{spec.id}: cannot size from its weights ({why}); it gets {_describe(gpus, res)}, a "
                "default: set gpus: and resources: on its entry to choose"
            )
        return JobSize(gpus=gpus, cpu=res.cpu, memory=res.memory, shm=_shm(gpus) if gpus else None,
                       summary=f"not sized: {_describe(gpus, res)} (default)", warnings=tuple(warnings),
                       gated=lookup.gated if lookup else None)

    on_gpu = gpus != 0
    need = _need(task, weights, on_gpu, longest_prompt)
    if d.sized == "memory":
        host = need.weights * 1.5 + 2 * GiB
        base = Resources(cpu="2" if gpus == 0 else str(4 + 4 * gpus), memory=_gi(host + (GiB if gpus else 0)))
        sized_gpu_total = need.weights * 1.5 + CUDA_CONTEXT
    else:
        if gpus < 0:
            gpus = _pow2_gpus(need, per_gpu)
            if gpus * per_gpu * USABLE < need.gpu_total(gpus):
                warnings.append(f"{spec.id}: needs ~{gib(need.gpu_total(gpus))} of GPU memory, more than "
                                f"{gpus} × {per_gpu / GiB:.0f}Gi: quantize it or use a larger gpu_type")
            elif gpus > NODE_GPUS:
                warnings.append(f"{spec.id}: needs {gpus} GPUs, more than one node usually has "
                                f"({NODE_GPUS}); quantize it, or make sure such nodes exist")
        if gpus > 0:
            host = need.host_weights + RUNTIME + quantity_bytes(_shm(gpus))
            base = Resources(cpu=str(4 + 4 * gpus), memory=_gi(host))
        else:
            host = need.weights + need.kv + OVERHEAD * need.weights + RUNTIME
            base = Resources(cpu="8", memory=_gi(host))
        sized_gpu_total = need.gpu_total(max(gpus, 1))
    res, replaced = _merge(base, cluster.gpu_resources if gpus else None, spec.resources)
    if gpus > 0 and explicit_gpus and gpus * per_gpu * USABLE < sized_gpu_total:
        warnings.append(f"{spec.id}: gpus: {gpus} gives {gpus * per_gpu / GiB:.0f}Gi of GPU memory but it "
                        f"needs ~{gib(sized_gpu_total)}; it will run out of memory: leave gpus: out to "
                        "size it")
    if "memory" in replaced and res.memory and quantity_bytes(res.memory) < host:
        warnings.append(f"{spec.id}: memory {res.memory} is less than the ~{_gi(host)} it needs to load its "
                        "weights; the pod may be OOMKilled while loading")

    params = (f"{weights.params / 1e9:.1f}B params" if weights.params >= 1e9
              else f"{weights.params / 1e6:.0f}M params")
    ckpt = f", {weights.dtype} checkpoint" if weights.dtype else ""
    arithmetic = f"{need.load}: {gib(need.weights)} weights"
    if d.sized == "gpus" and gpus:
        overhead = OVERHEAD * need.weights + CUDA_CONTEXT * gpus
        arithmetic += (f" + {gib(need.kv)} KV cache ({need.sequences} × {need.seq} tokens) + "
                       f"{gib(overhead)} overhead = {gib(sized_gpu_total)}")
    where = f"{gpus} × {gpu_type} ({per_gpu / GiB:.0f}Gi)" if gpus else "CPU"
    summary = (f"{params}{ckpt}, from {weights.source}; {arithmetic} -> {where}, {res.memory} memory, "
               f"{res.cpu} CPU")
    if replaced:
        summary += f" ({', '.join(dict.fromkeys(replaced))} as configured)"
    facts: dict[str, Any] = {
        "params": weights.params, "checkpoint_dtype": weights.dtype, "source": weights.source,
        "load": need.load, "weights_gib": round(need.weights / GiB, 2),
        "kv_cache_gib": round(need.kv / GiB, 2),
        "needed_gib": round(sized_gpu_total / GiB, 2), "batch": need.batch, "tokens_per_sequence": need.seq,
        "gpus": gpus, "gpu_type": gpu_type if gpus else None, "gpu_memory_gib": round(per_gpu / GiB, 1),
        "memory": res.memory, "cpu": res.cpu,
    }
    if need.sequences != need.batch:  # only where it differs, so other Jobs' manifests stay as they were
        facts["kv_sequences"] = need.sequences
    if explicit_gpus is not None:
        facts["gpus_configured"] = explicit_gpus
    return JobSize(gpus=gpus, cpu=res.cpu, memory=res.memory, shm=_shm(gpus) if gpus else None,
                   source=weights.source, summary=summary, warnings=tuple(warnings), facts=facts,
                   gated=lookup.gated if lookup else None)


def _describe(gpus: int, res: Resources) -> str:
    gpu = f"{gpus} GPU{'s' if gpus != 1 else ''}, " if gpus else ""
    return f"{gpu}{res.cpu} CPU, {res.memory} memory"


def id_only(model_id: str, revision: str | None = None, path: str | None = None) -> Lookup:
    """A lookup that reads nothing: the size written in the id, or nothing."""
    found = params_from_id(model_id)
    if found is None:
        return Lookup(None, notes=["not looked up", "its id names no size"])
    return Lookup(Weights(params=found[0], dtype=None, source=f"the size in its id ('{found[1]}')"))


def size_plan(plan: Plan, *, lookup: bool = True) -> dict[str, JobSize]:
    """Every model's Job size, by model folder.

    ``lookup=False`` reads nothing (no cache, no Hub, no tokenizer): sizes come from the ids alone,
    which keeps ``render_jobs`` a pure function when it is called without sizes.
    """
    from launcher.tokens import APPROXIMATE, counter_for, prompt_tokens

    cluster = plan.config.cluster
    seen: dict[tuple[str, str | None, str | None], Lookup] = {}
    out = {}
    for task in plan.tasks:
        spec = task.spec
        found = None
        prompt = 0
        if descriptor(spec.backend).sized is not None:
            key = (spec.id, getattr(spec, "revision", None), getattr(spec, "path", None))
            if key not in seen:
                seen[key] = find_weights(*key) if lookup else id_only(*key)
            found = seen[key]
            counter = counter_for(spec.id, key[1]) if lookup else APPROXIMATE
            prompt = max(prompt_tokens(task, plan.questions, counter), default=0)
        placement = merged_placement(cluster, spec.placement)
        out[task.model_dir] = size_task(task, cluster, placement, found, prompt)
    return out
