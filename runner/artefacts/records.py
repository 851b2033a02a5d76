"""The typed artefacts a run leaves in storage (see DESIGN.md, "What a run leaves").

Each carries a ``schema_version`` so the report and ``collect`` can read runs written by
older versions and refuse newer ones clearly.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from importlib import metadata
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1


def _is_none(value: Any) -> bool:
    return value is None


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(kw_only=True, init=False, repr=False, eq=False)
class AnswerFacts:
    """What a model says about one answer besides its text, declared once for both sides:

    a backend returns them in its ``GenResult`` (``runner.backends.base``) as the model sent
    them, checked later (``runner.engine.untrusted``); a run stores them, validated, in each
    ``ResponseRecord``, copied over by name (:func:`answer_facts`). A field added here is in
    both, and in responses.jsonl after ``attempts``.

    A plain dataclass with no methods of its own: ``GenResult`` (a dataclass) builds on its
    fields without validating them, ``ResponseRecord`` (a pydantic model) reads and validates them.
    """

    finish_reason: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    reasoning_tokens: int | None = None
    latency_s: float | None = None
    error: str | None = None
    attempts: int = 1


def answer_facts(result: AnswerFacts) -> dict[str, Any]:
    """The ``AnswerFacts`` fields of a backend's result, by name."""
    return {f.name: getattr(result, f.name) for f in fields(AnswerFacts)}


class _RecordHead(BaseModel):
    """The first keys of a record: which question, what was sent, what came back."""

    schema_version: int = SCHEMA_VERSION
    id: str
    index: int
    prompt: Any = Field(description="Exactly what was sent: a string, or a list of chat messages.")
    response: str | None = None


# The JSON's keys follow the classes from the last base to this one: _RecordHead's, then
# AnswerFacts', then these. responses.jsonl has been written in that order from the start.
class ResponseRecord(AnswerFacts, _RecordHead):
    """One line of responses.jsonl: one question put to one model."""

    model_config = ConfigDict(extra="allow")

    cost_usd: float | None = None
    # Loglikelihood scoring only.
    option_loglikelihoods: list[float] | None = None
    prediction: str | None = None
    prediction_norm: str | None = None
    # Encoders only.
    dimension: int | None = None
    truncated: bool | None = None


class ModelManifest(BaseModel):
    model_config = ConfigDict(extra="allow")

    schema_version: int = SCHEMA_VERSION
    run_id: str
    model: str
    model_dir: str
    backend: str
    kind: Literal["generate", "embed"] = "generate"
    revision: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    params_hash: str = ""
    system_prompt_hash: str | None = None
    prompt_rule: str | None = None
    hardware: dict[str, Any] = Field(default_factory=dict)
    started_at: str | None = None
    finished_at: str | None = None
    status: Literal["running", "complete", "failed"] = "running"
    error: str | None = None
    total: int = 0
    done: int = 0
    errors: int = 0
    throughput: dict[str, Any] = Field(default_factory=dict)
    usage: dict[str, Any] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)
    versions: dict[str, str] = Field(default_factory=dict)
    # Written only where they apply, so other manifests read as before.
    shard: int | None = Field(None, exclude_if=_is_none, description="This shard, 0-based.")
    shards: int | None = Field(None, exclude_if=_is_none, description="Shards of a sharded model.")
    embedding: dict[str, Any] | None = Field(
        None, exclude_if=_is_none, description="An encoder's embeddings.npy: dimension, pooling..."
    )
    sizing: dict[str, Any] | None = Field(
        None, exclude_if=_is_none,
        description="The Job's size and what it was computed from (MEDBENCH_SIZING, set by render).",
    )


ModelState = Literal["pending", "running", "complete", "failed"]


def combined_state(parts: list[ModelManifest | None], shards: int = 1) -> ModelState:
    """One model's state from its manifest, or from every shard's (None: not written yet).

    pending: nothing written; running: a part says so, or parts are missing and none failed;
    failed: a part failed; complete: every part is there and complete.
    """
    present = [p for p in parts if p is not None]
    if not present:
        return "pending"
    states = {p.status for p in present}
    if "running" in states or (len(present) < shards and "failed" not in states):
        return "running"
    return "failed" if "failed" in states else "complete"


class RunInfo(BaseModel):
    """run.json: the resolved config (no secrets), versions and when it was made."""

    model_config = ConfigDict(extra="allow")

    schema_version: int = SCHEMA_VERSION
    run_id: str
    name: str
    created_at: str
    config: dict[str, Any]
    system_prompts: dict[str, str | None] = Field(
        default_factory=dict, description="model_dir -> the exact system prompt text"
    )
    questions_sha256: str
    n_questions: int
    versions: dict[str, str] = Field(default_factory=dict)
    questions_source: dict[str, Any] | None = Field(
        None, exclude_if=_is_none,
        description="A named benchmark's provenance: dataset, revision, split, sample, prompts.",
    )


#: Distributions whose versions every run records: medbench and its core libraries, then each
#: registered backend's own (its descriptor's ``packages``, see ``runner.config.backends``).
_PACKAGES: list[str] = ["medbench", "numpy", "boto3", "pydantic"]


def record_packages(*names: str) -> None:
    """Record these distributions' versions too, from now on (each name once)."""
    _PACKAGES.extend(n for n in dict.fromkeys(names) if n not in _PACKAGES)


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out
