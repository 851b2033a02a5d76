"""Before a run: each model's tokens, time, GPU-hours and API cost, and the total. Estimates.

- **Input tokens**: every prompt counted with the model's tokenizer when it is cached, else at four
  characters a token (``launcher.tokens``), which the plan marks with ``≈``.
- **Output tokens**: ``max_new_tokens`` for every question, an upper bound (``≤``), unless an
  earlier run of the same model with the same settings is in the same storage: then its measured
  average. ``scoring: loglikelihood`` generates nothing: none.
- **Time and GPU-hours** of local generative models: output tokens over a speed, plus the prompts
  (once per option when scoring log-likelihoods) at ``PREFILL_SPEEDUP`` times it. The speed is,
  first that applies: ``cluster.throughput`` for the model (measured by the user); the speed an
  earlier run of the same settings measured *on the same hardware* as this Job (the same GPU type
  and count, or CPU for a CPU Job: a laptop's speed says nothing about an A100); else the speed
  table of the model's backend (its descriptor's ``LocalProfile``: output tokens a second for one
  pod on an A100-80GB by model size), scaled by the GPU type's speed and the quantization's cost.
  GPU-hours are the pod's hours times its GPUs, every shard.
- **Cost** of API models: tokens times their backend's dated price table (``launcher.prices``),
  or the entry's own ``prices``; of GPU time, GPU-hours times ``cluster.gpu_hour_price`` when set.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from launcher import prices as price_table
from launcher import runindex
from launcher.k8s.placement import merged_placement
from launcher.k8s.sizing import JobSize, gpu_type_of
from launcher.tokens import APPROXIMATE, counter_for, prompt_tokens
from runner.artefacts.records import ModelManifest
from runner.artefacts.stored import model_manifests
from runner.config import APIModel, descriptor
from runner.config.backends import LocalProfile
from runner.config.base import GPU_TYPES
from runner.errors import StorageError
from runner.plan import ModelTask, Plan
from runner.storage import Storage, open_storage, scheme_of

PREFILL_SPEEDUP = 20.0  #: prompt tokens are processed this many times faster than generated ones
ENCODER_TEXTS_PER_S = {"gpu": 500.0, "cpu": 30.0}  #: a BERT-base encoder
API_LATENCY_S, API_TOKENS_PER_S = 1.0, 50.0  #: one request's wait, then its streaming speed


@dataclass
class Measured:
    """What an earlier run of the same model with the same settings did, and on what."""

    run_id: str
    avg_output_tokens: float | None
    output_tokens_per_s: float | None
    device: str | None = None  #: "cuda" or "cpu"; None when the run did not record it
    gpus: tuple[str, ...] = ()  #: the GPUs' names as the driver gave them
    gpu_type: str | None = None  #: the Job's gpu_type, when it ran as a sized Job

    @property
    def hardware(self) -> str:
        if self.device == "cuda":
            names = sorted(set(self.gpus))
            return f"{len(self.gpus)} × {', '.join(names) or self.gpu_type or 'GPU'}"
        return "CPU" if self.device == "cpu" else "unrecorded hardware"

    def same_hardware(self, gpus: int, gpu_type: str) -> bool:
        """Whether this run's speed says anything about a Job on ``gpus`` × ``gpu_type`` (0: CPU)."""
        if gpus == 0:
            return self.device == "cpu"
        if self.device != "cuda" or len(self.gpus) != gpus:
            return False
        if self.gpu_type is not None:
            return self.gpu_type == gpu_type
        return bool(self.gpus) and all(is_gpu_type(name, gpu_type) for name in self.gpus)


def is_gpu_type(name: str, gpu_type: str) -> bool:
    """``NVIDIA A100-SXM4-80GB`` is an ``A100-80GB``; ``NVIDIA L40S`` is no ``L4``."""
    words = set(re.split(r"[^A-Z0-9]+", name.upper()))
    return all(part in words for part in gpu_type.upper().split("-"))


@dataclass
class ModelEstimate:
    model: str
    model_dir: str
    backend: str
    job: str  #: "1 × A100-80GB, 8 CPU, 58Gi" / "500m CPU, 1Gi"
    gpus: int
    sizing: str  #: where the Job's size came from ("" for fixed pods)
    input_tokens: int
    input_exact: bool
    tokenizer: str
    output_tokens: int
    output_basis: str  #: "max_new_tokens", "measured in run X", or "" (nothing generated)
    seconds: float | None
    gpu_hours: float
    speed_basis: str
    #: what the speed rests on: "table", "measured", "cluster.throughput", "api", "encoder", "" (none)
    speed_from: str = ""
    speed_table: str = ""  #: which speed table, when speed_from is "table"
    api_cost: float | None = None
    gpu_cost: float | None = None
    price_basis: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass
class PlanEstimate:
    run_id: str
    questions: int
    max_new_tokens: int
    gpu_type: str
    models: list[ModelEstimate]
    prices_as_of: str = ""  #: the dates of the price tables used, comma-separated
    notes: list[str] = field(default_factory=list)
    #: the price tables used: {"as_of": ..., "source": ...} each
    price_tables: list[dict[str, Any]] = field(default_factory=list)

    @property
    def gpu_hours(self) -> float:
        return sum(m.gpu_hours for m in self.models)

    @property
    def api_cost(self) -> float:
        return sum(m.api_cost or 0.0 for m in self.models)

    @property
    def gpu_cost(self) -> float | None:
        costs = [m.gpu_cost for m in self.models if m.gpu_cost is not None]
        return sum(costs) if costs else None

    @property
    def unpriced(self) -> list[str]:
        return [m.model for m in self.models if m.price_basis == "unpriced"]

    def to_dict(self) -> dict:
        out = asdict(self)
        out.update(gpu_hours=round(self.gpu_hours, 4), api_cost_usd=round(self.api_cost, 4),
                   gpu_cost_usd=None if self.gpu_cost is None else round(self.gpu_cost, 4),
                   unpriced=self.unpriced, estimates=True)
        return out


def table_speed(profile: LocalProfile, params: int, gpu_type: str, quantization: str) -> float:
    """Output tokens a second of one pod, from the backend's speed table (A100-80GB, 16 bits)."""
    billions = params / 1e9
    base = next(speed for limit, speed in profile.gpu_speed if billions <= limit)
    return base * GPU_TYPES[gpu_type].speed * profile.quantized_speed.get(quantization, 1.0)


def cpu_speed(profile: LocalProfile, params: int) -> float:
    return profile.cpu_speed_per_billion / max(params / 1e9, 0.05)


def _job_text(size: JobSize, gpu_type: str) -> str:
    gpu = f"{size.gpus} × {gpu_type}, " if size.gpus else ""
    return f"{gpu}{size.cpu} CPU, {size.memory}"


def _scores_options(task: ModelTask) -> bool:
    return task.spec.kind == "generate" and getattr(task.spec, "scoring", "generate") == "loglikelihood"


def estimate_model(plan: Plan, task: ModelTask, size: JobSize, measured: Measured | None) -> ModelEstimate:
    spec = task.spec
    cluster = plan.config.cluster
    d = descriptor(spec.backend)
    gpu_type = gpu_type_of(merged_placement(cluster, spec.placement))
    counter = counter_for(spec.id, getattr(spec, "revision", None)) if d.sized else APPROXIMATE
    tokens = prompt_tokens(task, plan.questions, counter)
    n = len(plan.questions)
    est = ModelEstimate(
        model=spec.id, model_dir=task.model_dir, backend=spec.backend, job=_job_text(size, gpu_type),
        gpus=size.gpus, sizing=size.source, input_tokens=sum(tokens), input_exact=counter.exact,
        tokenizer=counter.name, output_tokens=0, output_basis="", seconds=None, gpu_hours=0.0, speed_basis="",
    )
    if _scores_options(task):
        # Each option is scored after its prompt; nothing is generated.
        options = [max(1, len(q.options or {})) for q in plan.questions]
        scored = sum(t * k for t, k in zip(tokens, options, strict=True))
        est.notes.append(f"{spec.id}: scoring: loglikelihood generates no tokens; its time is its "
                         f"prompts, once per option (≈{scored:,} tokens)")
    elif spec.kind == "generate":
        if measured is not None and measured.avg_output_tokens is not None:
            est.output_tokens = round(measured.avg_output_tokens * n)
            est.output_basis = f"measured in run {measured.run_id}"
        else:
            est.output_tokens = task.generation.max_new_tokens * n
            est.output_basis = "max_new_tokens"
        scored = est.input_tokens
    else:
        scored = est.input_tokens
    _time(plan, task, size, est, measured, gpu_type, scored)
    if isinstance(spec, APIModel):
        prices, basis = price_table.price_for(spec)
        if prices is None:
            est.price_basis = "unpriced"
            est.notes.append(f"{spec.id}: no price known; add prices: to its entry")
        else:
            est.api_cost = price_table.cost(prices, est.input_tokens, est.output_tokens)
            est.price_basis = basis
    if est.gpu_hours and cluster.gpu_hour_price is not None:
        est.gpu_cost = est.gpu_hours * cluster.gpu_hour_price
    return est


def _time(plan: Plan, task: ModelTask, size: JobSize, est: ModelEstimate, measured: Measured | None,
          gpu_type: str, prompt_tokens_in: int) -> None:
    spec = task.spec
    d = descriptor(spec.backend)
    n = len(plan.questions)
    pods = spec.shards
    if d.instant:
        est.seconds, est.speed_basis = 0.0, f"{spec.backend} answers at once"
        return
    if isinstance(spec, APIModel):
        per_request = API_LATENCY_S + (est.output_tokens / max(n, 1)) / API_TOKENS_PER_S
        seconds = n * per_request / spec.concurrency
        if spec.requests_per_minute:
            seconds = max(seconds, n / spec.requests_per_minute * 60)
        est.seconds = seconds / pods
        est.speed_basis = f"{spec.concurrency} requests at a time, ~{per_request:.0f} s each"
        est.speed_from = "api"
        return
    if spec.kind == "embed":
        rate = ENCODER_TEXTS_PER_S["gpu" if size.gpus else "cpu"]
        est.seconds = n / rate / pods
        est.speed_basis = f"~{rate:.0f} texts a second"
        est.speed_from = "encoder"
        est.gpu_hours = est.seconds * pods * size.gpus / 3600
        return
    params = size.facts.get("params") if size.facts else None
    measured_by_user = plan.config.cluster.throughput
    override = measured_by_user.get(task.model_dir) or measured_by_user.get(spec.id)
    quant = getattr(spec, "quantization", "none")
    profile = d.local
    job = f"{size.gpus} × {gpu_type}" if size.gpus else "CPU"
    usable = measured is not None and measured.output_tokens_per_s is not None
    if usable and measured is not None and not measured.same_hardware(size.gpus, gpu_type):
        est.notes.append(f"{spec.id}: run {measured.run_id} measured {measured.output_tokens_per_s:,.0f} "
                         f"output tokens/s on {measured.hardware}, not on this Job's {job}: not used")
        usable = False
    if override:
        speed, basis, est.speed_from = override, "cluster.throughput", "cluster.throughput"
    elif usable and measured is not None and measured.output_tokens_per_s:
        speed = measured.output_tokens_per_s
        basis = f"measured in run {measured.run_id} on {measured.hardware}"
        est.speed_from = "measured"
    elif params and profile is not None:
        speed = table_speed(profile, params, gpu_type, quant) if size.gpus else cpu_speed(profile, params)
        quantized = f", {quant}" if quant != "none" and size.gpus else ""
        basis = f"{profile.speed_source} table: {params / 1e9:.1f}B on {job}{quantized}"
        est.speed_from, est.speed_table = "table", profile.speed_source
    else:
        why = "its size is unknown" if not params else f"backend {spec.backend} has no speed table"
        est.notes.append(f"{spec.id}: no time estimate ({why}); set cluster.throughput")
        return
    pod_seconds = est.output_tokens / speed + prompt_tokens_in / (speed * PREFILL_SPEEDUP)
    est.seconds = pod_seconds / pods
    est.gpu_hours = pod_seconds * size.gpus / 3600
    est.speed_basis = f"{speed:,.0f} output tokens/s a pod ({basis})"


# --- history ---------------------------------------------------------------------------------------

#: Earlier runs looked at for measured figures, newest first.
MAX_HISTORY_RUNS = 20


def _candidate_runs(plan: Plan) -> list[str]:
    output = plan.config.output
    runs = [e.run_id for e in reversed(runindex.entries()) if e.output.rstrip("/") == output.rstrip("/")]
    if not scheme_of(output).remote:
        root = Path(output) if Path(output).is_absolute() else Path.cwd() / output
        if root.is_dir():
            local = sorted((p for p in root.iterdir() if (p / "run.json").is_file()),
                           key=lambda p: p.stat().st_mtime, reverse=True)
            runs += [p.name for p in local]
    ordered = [plan.run_id, *runs]
    return list(dict.fromkeys(ordered))[:MAX_HISTORY_RUNS]


def _storage(plan: Plan) -> Storage:
    output = plan.config.output
    # Two attempts: history is a nicety, and a store that does not answer must not hold the plan up.
    return open_storage(output, endpoint_url=scheme_of(output).endpoint(plan.config.cluster), max_attempts=2)


def _measured(parts: list[ModelManifest | None], run_id: str) -> Measured | None:
    present = [p for p in parts if p is not None]
    answers = sum(int(p.throughput.get("answers") or 0) for p in present)
    out_tokens = sum(int(p.throughput.get("output_tokens") or 0) for p in present)
    timed = [p for p in present if p.throughput.get("output_tokens_per_s")]
    speeds = [float(p.throughput["output_tokens_per_s"]) for p in timed]
    if not answers:
        return None
    # The hardware the speed was measured on: the timed parts' (shards of one Job share it).
    hw = timed[0].hardware if timed else {}
    sizing = (timed[0].sizing or {}) if timed else {}
    gpus = hw.get("gpus")
    return Measured(run_id=run_id, avg_output_tokens=out_tokens / answers if out_tokens else None,
                    output_tokens_per_s=sum(speeds) / len(speeds) if speeds else None,
                    device=hw.get("device") if isinstance(hw.get("device"), str) else None,
                    gpus=tuple(str(g) for g in gpus) if isinstance(gpus, list) else (),
                    gpu_type=sizing.get("gpu_type") if isinstance(sizing.get("gpu_type"), str) else None)


def history(plan: Plan) -> tuple[dict[str, Measured], list[str]]:
    """Measured figures by model folder, from earlier runs in the plan's own storage (runs the
    local index knows, and for a folder every run in it); and notes on what could not be read.
    Only runs of a model with exactly these settings (the same ``params_hash``) count."""
    runs = _candidate_runs(plan)
    wanted = {t.model_dir: t for t in plan.tasks
              if t.spec.kind == "generate" and not descriptor(t.spec.backend).instant}
    if not wanted or (runs == [plan.run_id] and scheme_of(plan.config.output).remote):
        return {}, []
    try:
        storage = _storage(plan)
        found: dict[str, Measured] = {}
        for run_id in runs:
            for model_dir, task in wanted.items():
                if model_dir in found:
                    continue
                parts = model_manifests(storage, run_id, model_dir, task.spec.shards)
                if any(p is not None and p.params_hash != task.params_hash() for p in parts):
                    continue
                m = _measured(parts, run_id)
                if m is not None:
                    found[model_dir] = m
            if len(found) == len(wanted):
                break
    except StorageError as e:
        return {}, [f"earlier runs not read ({e})"]
    return found, []


def estimate(plan: Plan, sizes: dict[str, JobSize], *, use_history: bool = True) -> PlanEstimate:
    measured, notes = history(plan) if use_history else ({}, [])
    cluster = plan.config.cluster
    models = [estimate_model(plan, t, sizes[t.model_dir], measured.get(t.model_dir)) for t in plan.tasks]
    tables = price_table.tables_used(t.spec for t in plan.tasks)
    return PlanEstimate(run_id=plan.run_id, questions=len(plan.questions),
                        max_new_tokens=plan.config.generation.max_new_tokens,
                        gpu_type=gpu_type_of(cluster), models=models, notes=notes,
                        prices_as_of=", ".join(dict.fromkeys(t.as_of for t in tables)),
                        price_tables=[{"as_of": t.as_of, "source": t.source} for t in tables])
