"""models.yaml: the typed, validated description of a run.

Every key is declared here with ``extra="forbid"``, so a typo is an error rather than a
setting silently ignored. ``load_config`` turns pydantic's errors into one line a person can
act on: ``models.yaml:12: models[2].quantization: expected one of 'none', '8bit', '4bit'``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from runner.errors import ConfigError

BACKENDS = ("hf", "openai", "gemini", "embed", "echo")

# A name becomes part of object-storage keys and folder names, so it must not be able to
# climb out of its prefix or smuggle control characters into a path.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_safe_name(value: str, what: str) -> str:
    if not value or not value.strip():
        raise ValueError(f"{what} must not be empty")
    if value.startswith("/") or value.startswith("\\"):
        raise ValueError(f"{what} must not start with '/'")
    if ".." in value.split("/") or value == "..":
        raise ValueError(f"{what} must not contain '..'")
    if _CONTROL.search(value):
        raise ValueError(f"{what} must not contain control characters")
    return value


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class Generation(Strict):
    """Decoding settings shared by every generative backend."""

    max_new_tokens: int = Field(512, ge=1, description="Most tokens to generate per answer.")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0 means greedy decoding.")
    top_p: float | None = Field(None, gt=0.0, le=1.0, description="Nucleus sampling cut-off.")
    seed: int = Field(0, description="Seed for sampling; fixed so reruns are reproducible.")
    stop: list[str] = Field(default_factory=list, description="Extra stop strings.")


class GenerationOverride(Strict):
    """Per-model overrides: only the keys given replace the file's settings."""

    max_new_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    seed: int | None = None
    stop: list[str] | None = None


class Prices(Strict):
    """US dollars per million tokens, for the cost columns of the manifest."""

    input_per_million: float = Field(ge=0)
    output_per_million: float = Field(ge=0)


class Toleration(Strict):
    key: str | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class Placement(Strict):
    """Where a Job's pod may run. Set for the whole file under ``cluster`` or per model."""

    node_selector: dict[str, str] | None = None
    tolerations: list[Toleration] | None = None
    affinity: dict[str, Any] | None = Field(None, description="A Kubernetes affinity object.")
    priority_class: str | None = None
    queue: str | None = Field(None, description="Kueue LocalQueue name (kueue.x-k8s.io/queue-name).")


class Resources(Strict):
    cpu: str | None = None
    memory: str | None = None


class SecretNames(Strict):
    """Names of the Kubernetes Secrets the pods read credentials from (never their values)."""

    openai: str = "medbench-openai"
    gemini: str = "medbench-gemini"
    huggingface: str = "medbench-hf"
    s3: str = "medbench-s3"


class ClusterConfig(Placement):
    """Read only by ``launcher render`` and ``launcher submit``."""

    namespace: str = "medbench"
    image: str = "registry.example.org/medbench-runner:0.1.0"
    cpu_image: str | None = Field(None, description="Image for API and echo models; default image.")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    service_account: str = "medbench-runner"
    hf_cache_pvc: str | None = "medbench-hf-cache"
    secrets: SecretNames = Field(default_factory=SecretNames)
    backoff_limit: int = Field(3, ge=0)
    ttl_seconds_after_finished: int | None = Field(86400, ge=0)
    active_deadline_seconds: int | None = Field(None, ge=1)
    gpu_resources: Resources = Field(default_factory=lambda: Resources(cpu="8", memory="64Gi"))
    cpu_resources: Resources = Field(default_factory=lambda: Resources(cpu="500m", memory="1Gi"))
    s3_endpoint: str | None = Field(None, description="S3 endpoint the pods use (MinIO, Ceph).")


class ModelBase(Strict):
    id: str = Field(description="Hugging Face repo id, or the API's model name.")
    name: str | None = Field(
        None, description="Folder and display name; default the id with '/' replaced by '_'."
    )
    system_prompt: str | None = Field(
        None, description="Overrides the file's system prompt; 'none' sends none."
    )
    prompt_template: str | None = Field(
        None, description="Replaces the built-in question rendering; {question} {context} {options}."
    )
    generation: GenerationOverride | None = None
    gpus: int = Field(0, ge=0)
    shards: int = Field(1, ge=1, le=1000)
    resources: Resources | None = None
    placement: Placement | None = None

    @field_validator("id")
    @classmethod
    def _safe_id(cls, v: str) -> str:
        return check_safe_name(v, "id")

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str | None) -> str | None:
        if v is None:
            return v
        check_safe_name(v, "name")
        if "/" in v:
            raise ValueError("name must not contain '/'")
        return v

    @field_validator("prompt_template")
    @classmethod
    def _template_fields(cls, v: str | None) -> str | None:
        return check_template(v)

    @property
    def model_dir(self) -> str:
        return self.name or self.id.replace("/", "_")

    @property
    def kind(self) -> Literal["generate", "embed"]:
        return "generate"


def check_template(v: str | None) -> str | None:
    if v is None:
        return v
    import string

    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(v) if f is not None}
    except ValueError as e:
        raise ValueError(f"prompt_template is not a valid template: {e}") from e
    unknown = fields - {"question", "context", "options"}
    if unknown:
        raise ValueError(
            f"prompt_template uses {sorted(unknown)}; allowed: {{question}}, {{context}}, {{options}}"
        )
    if "question" not in fields:
        raise ValueError("prompt_template must contain {question}")
    return v


class HFModel(ModelBase):
    """A local Hugging Face causal LM, run with transformers."""

    backend: Literal["hf"] = "hf"
    path: str | None = Field(
        None,
        description="Load from this folder, or 'pkg:NAME' for a Python package that ships "
        "weights, instead of the Hub; the id stays the model's name.",
    )
    revision: str | None = Field(None, description="Hub branch, tag or commit.")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    quantization: Literal["none", "8bit", "4bit"] = "none"
    gguf_file: str | None = None
    batch_size: int | Literal["auto"] = "auto"
    prompt_format: Literal["auto", "chat", "plain", "pmc-llama"] = "auto"
    scoring: Literal["generate", "loglikelihood"] = "generate"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    max_input_tokens: int | None = Field(None, ge=1, description="Truncate longer prompts (left).")

    @field_validator("batch_size")
    @classmethod
    def _positive_batch(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValueError("batch_size must be 'auto' or a whole number of at least 1")
        return v


class _APIModel(ModelBase):
    base_url: str | None = Field(None, description="Endpoint override (OpenAI-compatible servers).")
    concurrency: int = Field(8, ge=1, le=1024)
    requests_per_minute: float | None = Field(None, gt=0)
    tokens_per_minute: float | None = Field(None, gt=0)
    max_retries: int = Field(5, ge=0, le=50)
    timeout: float = Field(120.0, gt=0, description="Seconds before one request is abandoned.")
    prices: Prices | None = None


class OpenAIModel(_APIModel):
    backend: Literal["openai"]
    api_key_env: str = "OPENAI_API_KEY"
    reasoning_effort: Literal["minimal", "low", "medium", "high"] | None = None


class GeminiModel(_APIModel):
    backend: Literal["gemini"]
    api_key_env: str = "GEMINI_API_KEY"
    thinking_budget: int | None = Field(None, ge=-1)


class EmbedModel(ModelBase):
    """An encoder; writes embeddings.npy instead of prose answers."""

    backend: Literal["embed"]
    path: str | None = None
    revision: str | None = None
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "float32"
    pooling: Literal["cls", "mean", "max"] | None = Field(
        None, description="Default 'cls' for SapBERT models, 'mean' otherwise."
    )
    normalize: bool = False
    batch_size: int = Field(32, ge=1)
    max_length: int | None = Field(None, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @property
    def kind(self) -> Literal["generate", "embed"]:
        return "embed"

    @property
    def resolved_pooling(self) -> str:
        if self.pooling:
            return self.pooling
        return "cls" if "sapbert" in self.id.lower() else "mean"


class EchoModel(ModelBase):
    """Answers with the rendered prompt: tests a pipeline or a cluster for free."""

    backend: Literal["echo"]
    batch_size: int = Field(16, ge=1)
    delay: float = Field(0.0, ge=0, description="Seconds to sleep per batch (to simulate work).")


ModelSpec = Annotated[
    HFModel | OpenAIModel | GeminiModel | EmbedModel | EchoModel, Field(discriminator="backend")
]


def infer_backend(model_id: str) -> str:
    """The backend a bare id most likely means: API names by prefix, else Hugging Face."""
    low = model_id.lower()
    if low.startswith(("gpt-", "chatgpt-", "o1", "o3", "o4")):
        return "openai"
    if low.startswith("gemini-"):
        return "gemini"
    return "hf"


class RunConfig(Strict):
    name: str = Field("medbench", description="The run's name; part of the run id.")
    questions: str = Field(description="JSONL question file, relative to this file.")
    system_prompt: str = Field(
        "oncology-expert", description="A preset name, a file path, inline text, or 'none'."
    )
    output: str = Field("results", description="Local folder or s3://bucket/prefix.")
    generation: Generation = Field(default_factory=Generation)
    prompt_template: str | None = None
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    models: list[ModelSpec] = Field(min_length=1)

    # Where the file was read from, so relative paths resolve against it. Not a YAML key.
    base_dir: Path = Field(default=Path("."), exclude=True)

    @field_validator("name")
    @classmethod
    def _safe_run_name(cls, v: str) -> str:
        check_safe_name(v, "name")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v):
            raise ValueError("name may use letters, digits, '.', '_' and '-' only")
        return v

    @field_validator("prompt_template")
    @classmethod
    def _template(cls, v: str | None) -> str | None:
        return check_template(v)

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
            if m.model_dir in seen:
                raise ValueError(
                    f"models[{i}] and models[{seen[m.model_dir]}] would both write to "
                    f"'{m.model_dir}'; give one of them a distinct 'name'"
                )
            seen[m.model_dir] = i
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


# --- loading -----------------------------------------------------------------------------


def _line_map(node: yaml.Node, path: tuple = (), out: dict | None = None) -> dict[tuple, int]:
    """Map each key path in the YAML document to its 1-based line, for error messages."""
    out = {} if out is None else out
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = k.value
            out[path + (key,)] = k.start_mark.line + 1
            _line_map(v, path + (key,), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _line_map(v, path + (i,), out)
    return out


def _loc_parts(loc: tuple) -> tuple:
    """Drop the discriminator tag pydantic inserts after a list index (models.2.hf.x)."""
    parts: list = []
    for i, p in enumerate(loc):
        if i > 0 and isinstance(loc[i - 1], int) and p in BACKENDS:
            continue
        if isinstance(p, str) and p.startswith("function-"):
            continue
        parts.append(p)
    return tuple(parts)


def format_loc(parts: tuple) -> str:
    s = ""
    for p in parts:
        s += f"[{p}]" if isinstance(p, int) else (f".{p}" if s else str(p))
    return s


def _message(err: dict) -> str:
    t = err["type"]
    ctx = err.get("ctx") or {}
    if t == "extra_forbidden":
        return "unknown key (check the spelling; see the models.yaml reference in the README)"
    if t == "missing":
        return "required key is missing"
    if t == "literal_error":
        return f"expected one of {ctx.get('expected', '')}"
    if t == "union_tag_invalid":
        return f"unknown backend {ctx.get('tag')!r}; expected one of {', '.join(BACKENDS)}"
    msg = err["msg"]
    return msg.removeprefix("Value error, ")


def format_validation_error(e: ValidationError, source: str, lines: dict[tuple, int]) -> str:
    """One line per problem: ``file:line: field.path: what is expected``."""
    out = []
    for err in e.errors():
        parts = _loc_parts(tuple(err["loc"]))
        if err["type"] == "union_tag_invalid":
            parts += ("backend",)
        line = None
        for n in range(len(parts), -1, -1):
            if parts[:n] in lines:
                line = lines[parts[:n]]
                break
        where = f"{source}:{line}" if line else source
        field = format_loc(parts)
        got = err.get("input")
        got_s = ""
        if err["type"] not in ("missing", "extra_forbidden") and not isinstance(got, dict | list):
            got_s = f" (got {got!r})"
        out.append(f"{where}: {field + ': ' if field else ''}{_message(err)}{got_s}")
    return "\n".join(out)


def parse_config(text: str, source: str = "models.yaml", base_dir: Path | None = None) -> RunConfig:
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{where}: YAML syntax error: {problem}") from None
    if data is None:
        raise ConfigError(f"{source}: the file is empty; it needs at least 'questions' and 'models'")
    if not isinstance(data, dict):
        raise ConfigError(f"{source}:1: expected a mapping of keys (questions:, models:, ...)")
    lines = _line_map(node) if node is not None else {}
    try:
        cfg = RunConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source, lines)) from None
    cfg.base_dir = base_dir if base_dir is not None else Path(".")
    return cfg


def load_config(path: str | Path) -> RunConfig:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{p}: no such file (expected a models.yaml, see examples/)")
    if p.is_dir():
        raise ConfigError(f"{p}: is a folder; expected a models.yaml file")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read: {e}") from None
    return parse_config(text, source=str(p), base_dir=p.parent)
