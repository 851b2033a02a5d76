"""config → plan: deterministic names and fully resolved per-model settings.

A plan is a pure function of the config and the questions: the same inputs give the same
run id, the same folder names and the same prompts, which is what makes a rerun resume and a
resubmit idempotent. Rendering manifests and running locally both start from a plan.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from runner.artefacts.records import RunInfo, now_iso, package_versions
from runner.benchmarks import BenchmarkSource
from runner.benchmarks.prompts import prompts_for
from runner.benchmarks.to_questions import load_benchmark, source_fingerprint
from runner.config import Generation, ModelSpec, RunConfig
from runner.credentials import public_url
from runner.errors import ConfigError
from runner.prompts import prompt_hash, resolve_system_prompt
from runner.questions import Question, dump_questions, load_questions

#: What a log-likelihood model scores after the prompt: each option's text, or its letter
#: (as lm-evaluation-harness does for MedQA, MedMCQA and MMLU).
Choices = Literal["option_texts", "letters"]


@dataclass
class ModelTask:
    spec: ModelSpec
    system_prompt: str | None
    generation: Generation
    prompt_template: str | None
    loglikelihood_choices: Choices = "option_texts"

    @property
    def model_dir(self) -> str:
        return self.spec.model_dir

    @property
    def system_prompt_hash(self) -> str | None:
        return prompt_hash(self.system_prompt)

    def parameters(self) -> dict[str, Any]:
        """Every setting that shapes this model's answers, as recorded in its manifest."""
        p = _public_urls(self.spec.model_dump(mode="json", exclude_none=True))
        p.pop("placement", None)
        p.pop("resources", None)
        # gpus: None means "sized from the model"; recorded as 0 as before, so run ids made
        # before sizing existed stay the same and those runs resume.
        p["gpus"] = p.get("gpus") or 0
        if self.spec.kind == "generate":
            p["generation"] = self.generation.model_dump(mode="json")
        p["prompt_template"] = self.prompt_template
        p["system_prompt_sha256_16"] = self.system_prompt_hash
        if self.loglikelihood_choices != "option_texts":  # only where it applies: run ids stay put
            p["loglikelihood_choices"] = self.loglikelihood_choices
        return p

    def params_hash(self) -> str:
        blob = json.dumps(self.parameters(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


@dataclass
class Plan:
    run_id: str
    config: RunConfig
    questions: list[Question]
    tasks: list[ModelTask]
    questions_jsonl: str = field(repr=False, default="")
    #: Where named-benchmark questions came from (dataset, revision, split, sample); None for a file.
    questions_source: dict[str, Any] | None = None

    def task(self, name: str) -> ModelTask:
        model_dir = self.config.model(name).model_dir
        return next(t for t in self.tasks if t.model_dir == model_dir)

    def run_info(self) -> RunInfo:
        return RunInfo(
            run_id=self.run_id,
            name=self.config.name,
            created_at=now_iso(),
            config=_public_config(self.config.model_dump(mode="json", exclude_none=True)),
            system_prompts={t.model_dir: t.system_prompt for t in self.tasks},
            questions_sha256=hashlib.sha256(self.questions_jsonl.encode()).hexdigest(),
            n_questions=len(self.questions),
            versions=package_versions(),
            questions_source=self.questions_source,
        )


#: Settings that hold a URL: recorded through ``public_url`` (no credentials), here as
#: everywhere else a URL is written or printed.
_URL_KEYS = ("base_url", "s3_endpoint")


def _public_urls(settings: dict[str, Any]) -> dict[str, Any]:
    for key in _URL_KEYS:
        if isinstance(settings.get(key), str):
            settings[key] = public_url(settings[key])
    return settings


def _public_config(dump: dict[str, Any]) -> dict[str, Any]:
    """A config dump fit for run.json: every URL without its credentials."""
    for model in dump.get("models") or []:
        _public_urls(model)
    _public_urls(dump.get("cluster") or {})
    return dump


def _benchmark(cfg: RunConfig) -> BenchmarkSource | None:
    return cfg.questions if isinstance(cfg.questions, BenchmarkSource) else None


def _scores_loglikelihood(spec: ModelSpec) -> bool:
    return getattr(spec, "scoring", "generate") == "loglikelihood"


def _task(cfg: RunConfig, spec: ModelSpec, system_prompt: str | None) -> ModelTask:
    """A model's resolved settings (its system prompt already resolved to text).

    On a named benchmark a generative model without a ``prompt_template`` of its own gets the
    benchmark's: with ``scoring: loglikelihood`` the harness's prompt and continuations, sent
    plain (``prompt_format: auto`` resolves to ``plain``, as the harness uses no chat template);
    otherwise the benchmark's instruction prompt.
    """
    template = spec.prompt_template or cfg.prompt_template
    choices: Choices = "option_texts"
    source = _benchmark(cfg)
    if source is not None and spec.kind == "generate" and template is None:
        prompts = prompts_for(source)
        if _scores_loglikelihood(spec):
            template = prompts.loglikelihood.prompt_template
            choices = prompts.loglikelihood.continuations
            if getattr(spec, "prompt_format", None) == "auto":  # every local backend that has the key
                spec = spec.model_copy(update={"prompt_format": "plain"})
        else:
            template = prompts.instruction_template
    return ModelTask(spec=spec, system_prompt=system_prompt, generation=cfg.generation_for(spec),
                     prompt_template=template, loglikelihood_choices=choices)


def _system_prompt(cfg: RunConfig, spec: ModelSpec) -> str | None:
    raw: str | None = spec.system_prompt if spec.system_prompt is not None else cfg.system_prompt
    if spec.kind == "embed":
        raw = None  # encoders embed the question alone; a prompt change must not re-run them
    if _benchmark(cfg) is not None and _scores_loglikelihood(spec) and spec.system_prompt is None:
        raw = None  # the harness sends no system prompt; a model's own system_prompt still wins
    try:
        return resolve_system_prompt(raw, cfg.base_dir)
    except ConfigError as e:
        where = f"models[{cfg.models.index(spec)}]." if spec.system_prompt is not None else ""
        raise ConfigError(f"{where}{e}") from None


def run_id_for(cfg: RunConfig, tasks: list[ModelTask], questions_jsonl: str,
               questions_source: dict[str, Any] | None = None) -> str:
    """``<name>-<hash>``: the hash covers the questions, where they came from and every model's settings."""
    h = hashlib.sha256(questions_jsonl.encode())
    if questions_source is not None:
        h.update(source_fingerprint(questions_source).encode())
    for t in tasks:
        h.update(t.model_dir.encode())
        h.update(t.params_hash().encode())
    return f"{cfg.name}-{h.hexdigest()[:10]}"


def make_plan(
    cfg: RunConfig, questions: list[Question] | None = None, run_id: str | None = None
) -> Plan:
    source: dict[str, Any] | None = None
    if questions is None:
        bench = _benchmark(cfg)
        if bench is not None:
            questions, source = load_benchmark(bench, cfg.base_dir)
        else:
            assert isinstance(cfg.questions, str)
            questions = load_questions(cfg.resolve_path(cfg.questions))
    tasks = [_task(cfg, m, _system_prompt(cfg, m)) for m in cfg.models]
    qjsonl = dump_questions(questions)
    rid = run_id or run_id_for(cfg, tasks, qjsonl, source)
    return Plan(run_id=rid, config=cfg, questions=questions, tasks=tasks, questions_jsonl=qjsonl,
                questions_source=source)


def plan_from_run(info: RunInfo, questions: list[Question]) -> Plan:
    """Rebuild a staged run's plan (in a pod) from run.json and questions.jsonl.

    System prompts come from run.json as resolved text: a prompt file on the submitter's
    laptop does not exist in the pod; a benchmark's questions come staged, never from its hub.
    """
    cfg = RunConfig.model_validate(info.config)
    tasks = [_task(cfg, m, info.system_prompts.get(m.model_dir)) for m in cfg.models]
    return Plan(run_id=info.run_id, config=cfg, questions=questions, tasks=tasks,
                questions_jsonl=dump_questions(questions), questions_source=info.questions_source)
