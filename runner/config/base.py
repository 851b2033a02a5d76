"""The parts of models.yaml every backend shares: decoding, placement, cluster, a model entry.

Every key is declared with ``extra="forbid"``, so a typo is an error rather than a setting
silently ignored, and every field has a description: the models.yaml reference
(docs/reference/models-yaml.md) is generated from them.
"""

from __future__ import annotations

import re
import string
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# A name becomes part of object-storage keys and folder names, so it must not be able to
# climb out of its prefix or smuggle control characters into a path.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_safe_name(value: str, what: str) -> str:
    """``value`` when it is safe as one path part of a key; ValueError saying why not."""
    if not value or not value.strip():
        raise ValueError(f"{what} must not be empty")
    if value.startswith("/") or value.startswith("\\"):
        raise ValueError(f"{what} must not start with '/'")
    if ".." in value.split("/") or value == "..":
        raise ValueError(f"{what} must not contain '..'")
    if _CONTROL.search(value):
        raise ValueError(f"{what} must not contain control characters")
    return value


def check_run_id(value: str, what: str = "run id") -> str:
    """A run id names one folder (or key prefix): a safe name without '/'."""
    check_safe_name(value, what)
    if "/" in value:
        raise ValueError(f"{what} must not contain '/'")
    return value


def check_template(v: str | None) -> str | None:
    if v is None:
        return v
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

    max_new_tokens: int | None = Field(None, ge=1, description="Replaces generation.max_new_tokens.")
    temperature: float | None = Field(None, ge=0.0, le=2.0, description="Replaces generation.temperature.")
    top_p: float | None = Field(None, gt=0.0, le=1.0, description="Replaces generation.top_p.")
    seed: int | None = Field(None, description="Replaces generation.seed.")
    stop: list[str] | None = Field(None, description="Replaces generation.stop.")


class Prices(Strict):
    """US dollars per million tokens, for the cost columns of the manifest."""

    input_per_million: float = Field(ge=0, description="Dollars per million input (prompt) tokens.")
    output_per_million: float = Field(ge=0, description="Dollars per million output tokens.")


class Toleration(Strict):
    """A Kubernetes toleration, with the same keys in snake_case."""

    key: str | None = Field(None, description="The taint key this tolerates; empty matches every key.")
    operator: Literal["Exists", "Equal"] = Field("Equal", description="Exists or Equal.")
    value: str | None = Field(None, description="The taint value (with operator Equal).")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="The taint effect this tolerates; empty matches every effect."
    )
    toleration_seconds: int | None = Field(
        None, description="How long the pod stays bound after a NoExecute taint appears."
    )


class Placement(Strict):
    """Where a Job's pod may run. Set for the whole file under ``cluster`` or per model."""

    node_selector: dict[str, str] | None = Field(None, description="Node labels the pod requires.")
    tolerations: list[Toleration] | None = Field(None, description="Taints the pod tolerates.")
    affinity: dict[str, Any] | None = Field(None, description="A Kubernetes affinity object.")
    priority_class: str | None = Field(None, description="PriorityClass name of the pods.")
    queue: str | None = Field(None, description="Kueue LocalQueue name (kueue.x-k8s.io/queue-name).")


class Resources(Strict):
    """A container's CPU and memory request, in Kubernetes quantities."""

    cpu: str | None = Field(None, description="CPU request, e.g. '8' or '500m'.")
    memory: str | None = Field(None, description="Memory request (and limit), e.g. '64Gi'.")


class SecretNames(Strict):
    """Names of the Kubernetes Secrets the pods read credentials from (never their values)."""

    openai: str = Field("medbench-openai", description="Secret with the OpenAI key under 'api-key'.")
    gemini: str = Field("medbench-gemini", description="Secret with the Gemini key under 'api-key'.")
    huggingface: str = Field("medbench-hf", description="Secret with the Hugging Face token under 'token'.")
    s3: str = Field(
        "medbench-s3", description="Secret with 'access-key-id' and 'secret-access-key' for S3."
    )


class ClusterConfig(Placement):
    """Read only by ``launcher render`` and ``launcher submit``."""

    namespace: str = Field("medbench", description="Namespace the Jobs are created in.")
    image: str = Field(
        "registry.example.org/medbench-runner:0.1.0",
        description="Runner image for local models (images/Dockerfile).",
    )
    cpu_image: str | None = Field(None, description="Image for API and echo models; default image.")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        "IfNotPresent", description="The containers' imagePullPolicy."
    )
    service_account: str = Field("medbench-runner", description="ServiceAccount of the pods.")
    hf_cache_pvc: str | None = Field(
        "medbench-hf-cache", description="PersistentVolumeClaim mounted as the HF cache; none: scratch."
    )
    secrets: SecretNames = Field(default_factory=SecretNames, description="Names of the Secrets used.")
    backoff_limit: int = Field(3, ge=0, description="Retries of a failed pod (per shard for shards).")
    ttl_seconds_after_finished: int | None = Field(
        86400, ge=0, description="Seconds a finished Job is kept before Kubernetes deletes it."
    )
    active_deadline_seconds: int | None = Field(
        None, ge=1, description="Seconds after which a Job is stopped, however far it got."
    )
    gpu_resources: Resources = Field(
        default_factory=lambda: Resources(cpu="8", memory="64Gi"),
        description="CPU and memory of a pod that has GPUs.",
    )
    cpu_resources: Resources = Field(
        default_factory=lambda: Resources(cpu="500m", memory="1Gi"),
        description="CPU and memory of a pod without GPUs.",
    )
    s3_endpoint: str | None = Field(None, description="S3 endpoint the pods use (MinIO, Ceph).")


class ModelBase(Strict):
    """The keys every model entry takes, whatever its backend."""

    #: What a model of this kind writes: prose answers, or embeddings.npy.
    kind: ClassVar[Literal["generate", "embed"]] = "generate"

    id: str = Field(description="Hugging Face repo id, or the API's model name.")
    backend: str = Field(
        description="Which backend runs the model (the sections below); when left out, inferred from the id."
    )
    name: str | None = Field(
        None, description="Folder and display name; default the id with '/' replaced by '_'."
    )
    system_prompt: str | None = Field(
        None, description="Overrides the file's system prompt; 'none' sends none."
    )
    prompt_template: str | None = Field(
        None, description="Replaces the built-in question rendering; {question} {context} {options}."
    )
    generation: GenerationOverride | None = Field(None, description="Overrides of the file's generation.")
    gpus: int = Field(0, ge=0, description="GPUs the model's pod requests.")
    shards: int = Field(
        1, ge=1, le=1000, description="Pods that split the questions between them (an Indexed Job)."
    )
    resources: Resources | None = Field(None, description="CPU and memory of the pod, over the defaults.")
    placement: Placement | None = Field(None, description="Where the pod may run, over cluster's.")

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


def model_dir_of(entry: dict[str, Any]) -> str:
    """The folder name of a model entry read from a stored config (run.json) as a mapping."""
    return entry.get("name") or str(entry.get("id", "")).replace("/", "_")
