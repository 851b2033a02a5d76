"""Before a run: each model's tokens, time, GPU-hours and API cost, and the total. Estimates.

- **Input tokens**: every prompt counted with the model's tokenizer when it is cached, else at four
  characters a token (``launcher.tokens``), which the plan marks with ``≈``.
- **Output tokens**: ``max_new_tokens`` for every question, an upper bound (``≤``), unless an
  earlier run of the same model with the same settings is in the same storage: then its measured
  average (and its measured speed below).
- **Time and GPU-hours** of local models: output tokens over a speed from ``THROUGHPUT`` (output
  tokens a second for one pod on an A100-80GB, by model size, transformers' batched generate),
  scaled by the GPU type's speed and the quantization's cost; ``cluster.throughput`` replaces it
  with a figure the user measured. GPU-hours are the pod's hours times its GPUs, every shard.
- **Cost** of API models: tokens times the prices of ``launcher.prices`` (dated), or the entry's
  own ``prices``; of GPU time, GPU-hours times ``cluster.gpu_hour_price`` when it is set.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from launcher import prices as price_table
from launcher import runindex
from launcher.k8s.placement import merged_placement
from launcher.k8s.sizing import JobSize, gpu_type_of
from launcher.tokens import APPROXIMATE, counter_for, prompt_tokens
from runner.artefacts.records import ModelManifest
from runner.artefacts.stored import model_manifests
from runner.config import APIModel, descriptor
from runner.config.base import GPU_TYPES
from runner.errors import StorageError
from runner.plan import ModelTask, Plan
from runner.storage import Storage, open_storage, scheme_of

#: Output tokens a second for one pod on an A100-80GB, by parameters (billions, upper bound):
#: transformers' generate, batch 32, 16-bit weights, greedy. Coarse on purpose: stated as estimates.
THROUGHPUT: tuple[tuple[float, float], ...] = (
    (1.5, 1500.0), (4.0, 1000.0), (9.0, 600.0), (16.0, 400.0), (36.0, 200.0), (80.0, 100.0),
    (math.inf, 40.0),
)
#: bitsandbytes dequantizes on every step: 4-bit and 8-bit models generate slower than 16-bit ones.
QUANT_SPEED = {"none": 1.0, "4bit": 0.6, "8bit": 0.35}
PREFILL_SPEEDUP = 20.0  #: prompt tokens are processed this many times faster than generated ones
CPU_TOKENS_PER_S_PER_BILLION = 20.0  #: on CPU, speed falls with size: 20 tok/s for a 1B model
ENCODER_TEXTS_PER_S = {"gpu": 500.0, "cpu": 30.0}  #: a BERT-base encoder
API_LATENCY_S, API_TOKENS_PER_S = 1.0, 50.0  #: one request's wait, then its streaming speed


@dataclass
class Measured:
    """What an earlier run of the same model with the same settings did."""

    run_id: str
    avg_output_tokens: float | None
    output_tokens_per_s: float | None


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
    output_basis: str  #: "max_new_tokens" or "measured in run X"
    seconds: float | None
    gpu_hours: float
    speed_basis: str
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
    prices_as_of: str = price_table.AS_OF
    notes: list[str] = field(default_factory=list)

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


def table_speed(params: int, gpu_type: str, quantization: str) -> float:
    billions = params / 1e9
    base = next(speed for limit, speed in THROUGHPUT if billions <= limit)
    return base * GPU_TYPES[gpu_type].speed * QUANT_SPEED.get(quantization, 1.0)


def _job_text(size: JobSize, gpu_type: str) -> str:
    gpu = f"{size.gpus} × {gpu_type}, " if size.gpus else ""
    return f"{gpu}{size.cpu} CPU, {size.memory}"


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
    if spec.kind == "generate":
        if measured is not None and measured.avg_output_tokens is not None:
            est.output_tokens = round(measured.avg_output_tokens * n)
            est.output_basis = f"measured in run {measured.run_id}"
        else:
            est.output_tokens = task.generation.max_new_tokens * n
            est.output_basis = "max_new_tokens"
    _time(plan, task, size, est, measured, gpu_type)
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
          gpu_type: str) -> None:
    spec = task.spec
    n = len(plan.questions)
    pods = spec.shards
    if spec.backend == "echo":
        est.seconds, est.speed_basis = 0.0, "echo answers at once"
        return
    if isinstance(spec, APIModel):
        per_request = API_LATENCY_S + (est.output_tokens / max(n, 1)) / API_TOKENS_PER_S
        seconds = n * per_request / spec.concurrency
        if spec.requests_per_minute:
            seconds = max(seconds, n / spec.requests_per_minute * 60)
        est.seconds = seconds / pods
        est.speed_basis = f"{spec.concurrency} requests at a time, ~{per_request:.0f} s each"
        return
    if spec.kind == "embed":
        rate = ENCODER_TEXTS_PER_S["gpu" if size.gpus else "cpu"]
        est.seconds = n / rate / pods
        est.speed_basis = f"~{rate:.0f} texts a second"
        est.gpu_hours = est.seconds * pods * size.gpus / 3600
        return
    params = size.facts.get("params") if size.facts else None
    measured_by_user = plan.config.cluster.throughput
    override = measured_by_user.get(task.model_dir) or measured_by_user.get(spec.id)
    quant = getattr(spec, "quantization", "none")
    if override:
        speed, basis = override, "cluster.throughput"
    elif measured is not None and measured.output_tokens_per_s:
        speed, basis = measured.output_tokens_per_s, f"measured in run {measured.run_id}"
    elif params and size.gpus:
        speed = table_speed(params, gpu_type, quant)
        basis = f"table: {params / 1e9:.1f}B on {gpu_type}" + (f", {quant}" if quant != "none" else "")
    elif params:
        speed = CPU_TOKENS_PER_S_PER_BILLION / max(params / 1e9, 0.05)
        basis = f"table: {params / 1e9:.1f}B on CPU"
    else:
        est.notes.append(f"{spec.id}: no time estimate (its size is unknown); set cluster.throughput")
        return
    pod_seconds = est.output_tokens / speed + est.input_tokens / (speed * PREFILL_SPEEDUP)
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
    speeds = [float(p.throughput["output_tokens_per_s"]) for p in present
              if p.throughput.get("output_tokens_per_s")]
    if not answers:
        return None
    return Measured(run_id=run_id, avg_output_tokens=out_tokens / answers if out_tokens else None,
                    output_tokens_per_s=sum(speeds) / len(speeds) if speeds else None)


def history(plan: Plan) -> tuple[dict[str, Measured], list[str]]:
    """Measured figures by model folder, from earlier runs in the plan's own storage (runs the
    local index knows, and for a folder every run in it); and notes on what could not be read.
    Only runs of a model with exactly these settings (the same ``params_hash``) count."""
    runs = _candidate_runs(plan)
    wanted = {t.model_dir: t for t in plan.tasks if t.spec.kind == "generate" and t.spec.backend != "echo"}
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
    return PlanEstimate(run_id=plan.run_id, questions=len(plan.questions),
                        max_new_tokens=plan.config.generation.max_new_tokens,
                        gpu_type=gpu_type_of(cluster), models=models, notes=notes)
