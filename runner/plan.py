"""config → plan: deterministic names and fully resolved per-model settings.

A plan is a pure function of the config and the questions: the same inputs give the same
run id, the same folder names and the same prompts, which is what makes a rerun resume and a
resubmit idempotent. Rendering manifests and running locally both start from a plan.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from runner.artefacts.records import RunInfo, now_iso, package_versions
from runner.config import Generation, ModelSpec, RunConfig
from runner.errors import ConfigError
from runner.prompts import prompt_hash, resolve_system_prompt
from runner.questions import Question, dump_questions, load_questions


@dataclass
class ModelTask:
    spec: ModelSpec
    system_prompt: str | None
    generation: Generation
    prompt_template: str | None

    @property
    def model_dir(self) -> str:
        return self.spec.model_dir

    @property
    def system_prompt_hash(self) -> str | None:
        return prompt_hash(self.system_prompt)

    def parameters(self) -> dict[str, Any]:
        """Every setting that shapes this model's answers, as recorded in its manifest."""
        p = self.spec.model_dump(mode="json", exclude_none=True)
        p.pop("placement", None)
        p.pop("resources", None)
        if self.spec.kind == "generate":
            p["generation"] = self.generation.model_dump(mode="json")
        p["prompt_template"] = self.prompt_template
        p["system_prompt_sha256_16"] = self.system_prompt_hash
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

    def task(self, name: str) -> ModelTask:
        spec = self.config.model(name)
        return next(t for t in self.tasks if t.spec is spec)

    def run_info(self) -> RunInfo:
        return RunInfo(
            run_id=self.run_id,
            name=self.config.name,
            created_at=now_iso(),
            config=self.config.model_dump(mode="json", exclude_none=True),
            system_prompts={t.model_dir: t.system_prompt for t in self.tasks},
            questions_sha256=hashlib.sha256(self.questions_jsonl.encode()).hexdigest(),
            n_questions=len(self.questions),
            versions=package_versions(),
        )


def _task(cfg: RunConfig, spec: ModelSpec) -> ModelTask:
    raw: str | None = spec.system_prompt if spec.system_prompt is not None else cfg.system_prompt
    if spec.kind == "embed":
        raw = None  # encoders embed the question alone; a prompt change must not re-run them
    try:
        system = resolve_system_prompt(raw, cfg.base_dir)
    except ConfigError as e:
        where = f"models[{cfg.models.index(spec)}]." if spec.system_prompt is not None else ""
        raise ConfigError(f"{where}{e}") from None
    return ModelTask(
        spec=spec,
        system_prompt=system,
        generation=cfg.generation_for(spec),
        prompt_template=spec.prompt_template or cfg.prompt_template,
    )


def run_id_for(cfg: RunConfig, tasks: list[ModelTask], questions_jsonl: str) -> str:
    """``<name>-<hash>``: the hash covers the questions and every model's settings."""
    h = hashlib.sha256(questions_jsonl.encode())
    for t in tasks:
        h.update(t.model_dir.encode())
        h.update(t.params_hash().encode())
    return f"{cfg.name}-{h.hexdigest()[:10]}"


def make_plan(
    cfg: RunConfig, questions: list[Question] | None = None, run_id: str | None = None
) -> Plan:
    if questions is None:
        questions = load_questions(cfg.resolve_path(cfg.questions))
    tasks = [_task(cfg, m) for m in cfg.models]
    qjsonl = dump_questions(questions)
    rid = run_id or run_id_for(cfg, tasks, qjsonl)
    return Plan(run_id=rid, config=cfg, questions=questions, tasks=tasks, questions_jsonl=qjsonl)


def plan_from_run(info: RunInfo, questions: list[Question]) -> Plan:
    """Rebuild a staged run's plan (in a pod) from run.json and questions.jsonl.

    System prompts come from run.json as resolved text: a prompt file on the submitter's
    laptop does not exist in the pod.
    """
    cfg = RunConfig.model_validate(info.config)
    tasks = [
        ModelTask(
            spec=m,
            system_prompt=info.system_prompts.get(m.model_dir),
            generation=cfg.generation_for(m),
            prompt_template=m.prompt_template or cfg.prompt_template,
        )
        for m in cfg.models
    ]
    return Plan(run_id=info.run_id, config=cfg, questions=questions, tasks=tasks,
                questions_jsonl=dump_questions(questions))
