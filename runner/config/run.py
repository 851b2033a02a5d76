"""models.yaml as a whole: the run's name, questions, prompt, output, decoding and models."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, ValidationInfo, field_validator, model_validator

from runner.benchmarks.source import BenchmarkSource
from runner.config.backends import ModelSpec, infer_backend
from runner.config.base import (
    MAX_NAME_BYTES,
    ClusterConfig,
    Generation,
    ModelBase,
    Strict,
    check_output_url,
    check_safe_name,
    resolve_template,
)
from runner.errors import ConfigError

#: The run's name becomes ``<name>-<10 hex digits>``, the run id, which names a folder.
MAX_RUN_NAME = MAX_NAME_BYTES - 11


def _questions_kind(v: Any) -> str:
    return "benchmark" if isinstance(v, dict | BenchmarkSource) else "file"


QuestionsSource = Annotated[
    Annotated[str, Tag("file")] | Annotated[BenchmarkSource, Tag("benchmark")],
    Discriminator(_questions_kind),
]


class RunConfig(Strict):
    """A models.yaml file."""

    name: str = Field(
        "medbench", description=f"The run's name; part of the run id: letters, digits, '.', '_' and '-', "
        f"starting with a letter or digit, at most {MAX_RUN_NAME} characters."
    )
    questions: QuestionsSource = Field(
        description="A JSONL question file (relative to this file), or a named benchmark such as "
        "{benchmark: medqa, split: test, limit: 500, seed: 0} (`launcher benchmarks` lists them)."
    )
    system_prompt: str = Field(
        "oncology-expert", description="A preset name, a file path, inline text, or 'none'."
    )
    output: str = Field("results", description="Local folder or s3://bucket/prefix.")
    generation: Generation = Field(
        default_factory=Generation, description="Decoding settings for all models."
    )
    prompt_template: str | None = Field(
        None, description="Replaces the built-in question rendering for all models: a template with "
        "{question}, {context} and {options}, or a file holding one (relative to this file)."
    )
    cluster: ClusterConfig = Field(
        default_factory=ClusterConfig,
        description="Kubernetes settings: render and submit read them all, plan some, launcher run only "
        "s3_endpoint (see below)."
    )
    models: list[ModelSpec] = Field(min_length=1, description="The panel: one entry per model.")
    answer_embeddings: Literal["auto", "minilm", "minilm-256", "none"] = Field(
        "auto", description="Embed each free-text answer for the report's similarity when its model ends, "
        "where it ran: auto (every model but echo), minilm or minilm-256 (echo too), none (the report "
        "embeds them)."
    )

    # Where the file was read from, so relative paths resolve against it. Not a YAML key.
    base_dir: Path = Field(default=Path("."), exclude=True)

    @field_validator("name")
    @classmethod
    def _safe_run_name(cls, v: str) -> str:
        if len(v) > MAX_RUN_NAME:
            raise ValueError(f"name is {len(v)} characters long; at most {MAX_RUN_NAME} (the run id "
                             f"adds 11 to it and names a folder)")
        check_safe_name(v, "name")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v):
            raise ValueError("name may use letters, digits, '.', '_' and '-' only")
        return v

    @field_validator("prompt_template")
    @classmethod
    def _template(cls, v: str | None, info: ValidationInfo) -> str | None:
        return resolve_template(v, info)

    @field_validator("output")
    @classmethod
    def _output(cls, v: str) -> str:
        return check_output_url(v)

    @field_validator("models", mode="before")
    @classmethod
    def _default_backend(cls, v: Any) -> Any:
        if not isinstance(v, list):
            return v
        out = []
        for item in v:
            if isinstance(item, dict) and "backend" not in item and isinstance(item.get("id"), str):
                item = {**item, "backend": infer_backend(item["id"])}
            out.append(item)
        return out

    @model_validator(mode="after")
    def _unique_dirs(self) -> RunConfig:
        seen: dict[str, int] = {}
        for i, m in enumerate(self.models):
            # On macOS and Windows 'Echo' and 'echo' are one folder, and on macOS so are 'café'
            # written with one code point for 'é' (NFC) and with 'e' and a combining accent (NFD).
            folded = unicodedata.normalize("NFC", m.model_dir.lower())
            if folded in seen:
                first = self.models[seen[folded]].model_dir
                where = f"'{m.model_dir}'"
                if first != m.model_dir and first.lower() == m.model_dir.lower():
                    where += (f" and '{first}', one folder on macOS and Windows (the names differ only "
                              "in case)")
                elif first != m.model_dir:  # they look alike: ascii() shows how they differ
                    where += (f" and '{first}', one folder on macOS ({ascii(m.model_dir)} and {ascii(first)} "
                              "differ only in how a letter is encoded, NFD or NFC)")
                raise ValueError(f"models[{i}] and models[{seen[folded]}] would both write to {where}; "
                                 "give one of them a distinct 'name'")
            seen[folded] = i
        return self

    def generation_for(self, model: ModelBase) -> Generation:
        if model.generation is None:
            return self.generation
        over = model.generation.model_dump(exclude_none=True)
        return self.generation.model_copy(update=over)

    def model(self, name: str) -> ModelSpec:
        for m in self.models:
            if name in (m.model_dir, m.id, m.name):
                return m
        known = ", ".join(m.model_dir for m in self.models)
        raise ConfigError(f"no model named '{name}' in this config; known: {known}")

    def resolve_path(self, p: str) -> Path:
        path = Path(p).expanduser()
        return path if path.is_absolute() else self.base_dir / path
