"""The parts of models.yaml every backend shares: decoding, placement, cluster, a model entry.

Every key is declared with ``extra="forbid"``, so a typo is an error rather than a setting
silently ignored, and every field has a description: the models.yaml reference
(docs/reference/models-yaml.md) is generated from them.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from runner.artefacts.keys import RESERVED_NAMES
from runner.errors import ConfigError
from runner.prompt_file import read_prompt_file
from runner.storage.endpoint import endpoint_problem
from runner.storage.schemes import url_problem

# A name becomes part of object-storage keys and folder names, so it must not be able to
# climb out of its prefix or smuggle control characters into a path.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

# Kubernetes' own rules, checked here so a bad name is a config error naming its line, not an
# API server refusal after half a panel was submitted.
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_CPU = re.compile(r"^([0-9]+(\.[0-9]+)?|[0-9]+m)$")
_MEMORY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: Variables the pods (and the launcher) set or read themselves: an API key under one of these
#: names would overwrite ours, or be overwritten, in the same container.
RESERVED_ENV_PREFIXES = ("MEDBENCH_", "AWS_", "KUBERNETES_")
RESERVED_ENV = frozenset({"HF_TOKEN", "HF_HOME", "HF_ENDPOINT", "HF_HUB_OFFLINE", "PYTHONUNBUFFERED",
                          "JOB_COMPLETION_INDEX", "PATH", "HOME"})


def check_dns_label(value: str) -> str:
    """A namespace: a DNS-1123 label (lower-case letters, digits and '-', at most 63)."""
    if len(value) > 63 or not _DNS_LABEL.match(value):
        raise ValueError("expected a DNS-1123 label (lower-case letters, digits and '-', starting and "
                         "ending with a letter or digit, at most 63 characters)")
    return value


def check_object_name(value: str) -> str:
    """A Secret, PVC, ServiceAccount or PriorityClass name: a DNS-1123 subdomain."""
    if len(value) > 253 or not _DNS_SUBDOMAIN.match(value):
        raise ValueError("expected a Kubernetes object name (lower-case letters, digits, '-' and '.', "
                         "starting and ending with a letter or digit)")
    return value


def check_memory(value: str | None) -> str | None:
    if value is not None and not _MEMORY.match(value):
        raise ValueError("expected a Kubernetes quantity such as 64Gi or 512Mi")
    return value


def check_env_name(value: str) -> str:
    """An environment variable a pod may be given: valid, and not one medbench sets itself."""
    if not _ENV_NAME.match(value):
        raise ValueError("expected an environment variable name (letters, digits and '_', not starting "
                         "with a digit)")
    if value in RESERVED_ENV or value.startswith(RESERVED_ENV_PREFIXES):
        raise ValueError(f"{value} is a variable medbench sets itself "
                         f"({', '.join(p + '*' for p in RESERVED_ENV_PREFIXES)}, "
                         f"{', '.join(sorted(RESERVED_ENV))}); choose another name")
    return value


def check_output_url(value: str) -> str:
    """``output``: where a run can live, by the one rule every output goes through
    (``runner.storage.schemes.url_problem``: a folder, or ``s3://bucket/prefix`` whose prefix
    cannot climb out of itself)."""
    problem = url_problem(value)
    if problem:
        raise ValueError(problem)
    return value


#: Longest id, name or run id, in UTF-8 bytes: a folder name, with room under the 255 bytes
#: filesystems allow for the files named after it (``leases/<name>.<shard>.json`` and the
#: temporary file each write goes through).
MAX_NAME_BYTES = 200


def check_safe_name(value: str, what: str) -> str:
    """``value`` when it is safe as one path part of a key; ValueError saying why not."""
    if not value or not value.strip():
        raise ValueError(f"{what} must not be empty")
    if value.startswith("/") or value.startswith("\\"):
        raise ValueError(f"{what} must not start with '/'")
    parts = value.split("/")
    if ".." in parts:
        raise ValueError(f"{what} must not contain '..'")
    if "." in parts:
        raise ValueError(f"{what} must not be '.' or contain a '.' part: it would name the folder above")
    if "\\" in value:
        raise ValueError(f"{what} must not contain '\\' (a path separator on Windows)")
    if _CONTROL.search(value):
        raise ValueError(f"{what} must not contain control characters")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:  # bytes that are not UTF-8, smuggled in through argv or the environment
        raise ValueError(f"{what} must be valid UTF-8 text") from None
    if size > MAX_NAME_BYTES:
        raise ValueError(f"{what} is {size} bytes long; at most {MAX_NAME_BYTES} (it names a folder)")
    return value


def check_folder_name(value: str, what: str) -> str:
    """A model's folder (or a run id): a safe name that is not one the run layout uses itself."""
    if value.lower() in RESERVED_NAMES:
        raise ValueError(f"{what} '{value}' is a name the run layout uses for its own files "
                         f"({', '.join(sorted(RESERVED_NAMES))})")
    return value


def check_run_id(value: str, what: str = "run id") -> str:
    """A run id names one folder (or key prefix): a safe name without '/'."""
    check_safe_name(value, what)
    if "/" in value:
        raise ValueError(f"{what} must not contain '/'")
    return check_folder_name(value, what)


#: The fields a prompt_template may use.
TEMPLATE_FIELDS = ("question", "context", "options")


def check_template(v: str | None) -> str | None:
    """A prompt_template that ``str.format`` fills with the question's text and cannot fail on.

    Only the plain fields ``{question}``, ``{context}`` and ``{options}``: no conversion
    (``!r``) and no format spec (``:>20``). Both are refused outright rather than tried, since a
    spec can fail only at fill time (``{question:d}``) or ask for gigabytes of padding
    (``{question:>3000000000}``); and a prompt has no use for either.
    """
    if v is None:
        return v
    try:
        parsed = list(string.Formatter().parse(v))
    except ValueError as e:
        raise ValueError(f"not a valid template: {e} (write {{{{ and }}}} for a literal brace)") from None
    allowed = ", ".join(f"{{{f}}}" for f in TEMPLATE_FIELDS)
    fields = set()
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if conversion is not None or spec:
            written = "{" + field + ("!" + conversion if conversion else "") + \
                (":" + spec if spec else "") + "}"
            raise ValueError(f"{written} has a conversion or format spec; only plain fields are "
                             f"filled ({allowed})")
        fields.add(field)
    unknown = fields - set(TEMPLATE_FIELDS)
    if unknown:
        raise ValueError(f"prompt_template uses {sorted(unknown)}; allowed: {allowed}")
    if "question" not in fields:
        raise ValueError("prompt_template must contain {question}")
    return v


def resolve_template(v: str | None, info: ValidationInfo) -> str | None:
    """``prompt_template``: the template itself, or the path of a text file that holds it.

    One line without a brace cannot be a template (it has no ``{question}``), so it is a file,
    relative to models.yaml (``base_dir`` in the validation context) like a system prompt file.
    Its text replaces the path in the config, so run.json and the run id hold the template
    itself, and a pod, which has no such file, gets it too. One final newline is dropped: the
    file's last line ends in one, and a template decides its own ending.
    """
    if v is None or "{" in v or "\n" in v:
        return check_template(v)
    base_dir = Path((info.context or {}).get("base_dir") or ".")
    path = Path(v.strip())
    try:
        path = path.expanduser()
    except RuntimeError:  # "~someone" with no such user: looked for as written
        pass
    path = path if path.is_absolute() else base_dir / path
    try:
        missing = not path.exists() and not path.is_symlink()
    except OSError:  # not even a possible file name (too long): read_text says so
        missing = False
    if missing:
        raise ValueError(f"no file {path}; a template written inline must contain {{question}}")
    try:
        text = read_prompt_file(path, "prompt_template")
    except ConfigError as e:
        raise ValueError(str(e)) from None
    try:
        return check_template(text.removesuffix("\n").removesuffix("\r"))
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


class Strict(BaseModel):
    # YAML reads .inf and .nan as floats; no setting means either (an infinite price or speed).
    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)


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


@dataclass(frozen=True)
class GpuType:
    """What sizing and the plan know about one GPU model."""

    memory_gib: int  #: memory of one GPU, as the driver reports it (rounded)
    #: generation speed relative to an A100-80GB, for the plan's GPU-hours: decoding is bound by
    #: memory bandwidth, so this is roughly the ratio of the cards' bandwidths
    speed: float


#: The GPU types ``gpu_type`` names. Speeds are coarse, stated as estimates wherever shown.
GPU_TYPES: dict[str, GpuType] = {
    "A100-80GB": GpuType(80, 1.0),
    "A100-40GB": GpuType(40, 0.8),
    "H100-80GB": GpuType(80, 1.6),
    "H200": GpuType(141, 2.2),
    "B200": GpuType(180, 2.8),
    "L40S": GpuType(48, 0.45),
    "A10G": GpuType(24, 0.3),
    "L4": GpuType(24, 0.15),
    "T4": GpuType(16, 0.15),
    "V100-32GB": GpuType(32, 0.45),
}
DEFAULT_GPU_TYPE = "A100-80GB"


class Placement(Strict):
    """Where a Job's pod may run. Set for the whole file under ``cluster`` or per model."""

    node_selector: dict[str, str] | None = Field(None, description="Node labels the pod requires.")
    tolerations: list[Toleration] | None = Field(None, description="Taints the pod tolerates.")
    affinity: dict[str, Any] | None = Field(None, description="A Kubernetes affinity object.")
    priority_class: str | None = Field(None, description="PriorityClass name of the pods.")
    queue: str | None = Field(None, description="Kueue LocalQueue name (kueue.x-k8s.io/queue-name).")
    gpu_type: str | None = Field(
        None, description="The GPU the pods land on, for sizing and the plan's GPU-hours: one of "
        + ", ".join(GPU_TYPES) + f"; default {DEFAULT_GPU_TYPE}. Pair it with a node_selector or "
        "affinity that puts the pods there."
    )
    gpu_memory: str | None = Field(
        None, description="Memory of one GPU, e.g. 80Gi, when it differs from the gpu_type's; "
        "sizing picks the number of GPUs from it (default 80Gi)."
    )

    @field_validator("priority_class")
    @classmethod
    def _priority_class(cls, v: str | None) -> str | None:
        return v if v is None else check_object_name(v)

    @field_validator("queue")
    @classmethod
    def _queue(cls, v: str | None) -> str | None:
        # Both a LocalQueue's name and the value of the kueue.x-k8s.io/queue-name label.
        if v is not None and (len(v) > 63 or not _DNS_SUBDOMAIN.match(v)):
            raise ValueError("expected a LocalQueue name (lower-case letters, digits, '-' and '.', "
                             "starting and ending with a letter or digit, at most 63 characters)")
        return v

    @field_validator("gpu_type")
    @classmethod
    def _gpu_type(cls, v: str | None) -> str | None:
        if v is not None and v not in GPU_TYPES:
            raise ValueError(f"expected one of {', '.join(GPU_TYPES)} (for another GPU, pick the closest "
                             "and set gpu_memory)")
        return v

    @field_validator("gpu_memory")
    @classmethod
    def _gpu_memory(cls, v: str | None) -> str | None:
        return check_memory(v)


class Resources(Strict):
    """A container's CPU and memory request, in Kubernetes quantities."""

    cpu: str | None = Field(None, description="CPU request, e.g. '8' or '500m'.")
    memory: str | None = Field(None, description="Memory request (and limit), e.g. '64Gi'.")

    @field_validator("cpu")
    @classmethod
    def _cpu(cls, v: str | None) -> str | None:
        if v is not None and not _CPU.match(v):
            raise ValueError("expected a Kubernetes quantity such as 8, 0.5 or 500m")
        return v

    @field_validator("memory")
    @classmethod
    def _memory(cls, v: str | None) -> str | None:
        return check_memory(v)


@dataclass(frozen=True)
class SecretName:
    """A Kubernetes Secret some pods read a credential from: its key under ``cluster.secrets``,
    the name it has when that key is left out, and what it holds (for the reference)."""

    key: str
    default: str
    holds: str


#: The Secrets backends' pods read, by their key under ``cluster.secrets``. Each backend declares
#: its own in its descriptor; ``runner.config.backends`` keeps this in step with them.
BACKEND_SECRETS: dict[str, SecretName] = {}


class SecretNames(Strict):
    """Names of the Kubernetes Secrets the pods read credentials from (never their values).

    The S3 Secret's key is declared here; every other key is a Secret a backend's descriptor
    declares (``huggingface``, ``openai``, ``gemini``, ...), listed below with its default.
    """

    model_config = ConfigDict(extra="allow")

    s3: str = Field(
        "medbench-s3", description="Secret with 'access-key-id' and 'secret-access-key' for S3."
    )

    @field_validator("s3")
    @classmethod
    def _names(cls, v: str) -> str:
        return check_object_name(v)

    @model_validator(mode="after")
    def _backend_secrets(self) -> SecretNames:
        problems: list[InitErrorDetails] = []
        for key, value in (self.model_extra or {}).items():
            if key not in BACKEND_SECRETS:
                problems.append(InitErrorDetails(type="extra_forbidden", loc=(key,), input=value))
                continue
            try:
                if not isinstance(value, str):
                    raise ValueError("expected a Kubernetes object name")
                check_object_name(value)
            except ValueError as e:
                problems.append(InitErrorDetails(type=PydanticCustomError("value_error", str(e)), loc=(key,),
                                                 input=value))
        if problems:
            raise ValidationError.from_exception_data(type(self).__name__, problems)
        return self

    def name(self, secret: SecretName) -> str:
        """The Secret's name in the namespace: as configured, else its default."""
        return str((self.model_extra or {}).get(secret.key) or secret.default)


class ClusterConfig(Placement):
    """Kubernetes settings. ``launcher render`` and ``launcher submit`` read every key; ``launcher
    plan`` the keys that size and price a Job (the placement keys, ``gpu_type``, ``gpu_memory``,
    ``gpu_resources``, ``cpu_resources``, ``throughput``, ``gpu_hour_price``) and ``s3_endpoint``
    (to read earlier runs); ``launcher run`` only ``s3_endpoint``, for an s3:// output."""

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
        default_factory=Resources,
        description="CPU and memory of every pod with GPUs, over what sizing computes from the model's "
        "weights; left out: sized (docs/kubernetes.md).",
    )
    cpu_resources: Resources = Field(
        default_factory=lambda: Resources(cpu="500m", memory="1Gi"),
        description="CPU and memory of the pods that are not sized from weights (API and echo models).",
    )
    image_pull_secrets: list[str] = Field(
        default_factory=list, description="Secrets the kubelet pulls the images with (imagePullSecrets)."
    )
    s3_endpoint: str | None = Field(None, description="S3 endpoint the pods use (MinIO, Ceph).")
    throughput: dict[str, float] = Field(
        default_factory=dict,
        description="Output tokens a second you measured for a model's pod, by model id or folder name; "
        "replaces the plan's table estimate for that model.",
    )
    gpu_hour_price: float | None = Field(
        None, ge=0, description="Dollars per GPU-hour, to price the plan's GPU-hours; none: not priced."
    )

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, v: str) -> str:
        return check_dns_label(v)

    @field_validator("service_account")
    @classmethod
    def _service_account(cls, v: str) -> str:
        return check_object_name(v)

    @field_validator("hf_cache_pvc")
    @classmethod
    def _pvc(cls, v: str | None) -> str | None:
        return v if v is None else check_object_name(v)

    @field_validator("image_pull_secrets")
    @classmethod
    def _pull_secrets(cls, v: list[str]) -> list[str]:
        return [check_object_name(name) for name in v]

    @model_validator(mode="before")
    @classmethod
    def _s3_endpoint(cls, data: Any) -> Any:
        # Checked on the whole section, not the field: an error on the field would quote the
        # value, login and all.
        v = data.get("s3_endpoint") if isinstance(data, dict) else None
        problem = isinstance(v, str) and endpoint_problem(v)
        if problem:
            raise ValueError(f"s3_endpoint {problem}")
        return data

    @field_validator("throughput")
    @classmethod
    def _throughput(cls, v: dict[str, float]) -> dict[str, float]:
        bad = [k for k, x in v.items() if not x > 0]
        if bad:
            raise ValueError(f"throughput of {', '.join(bad)} must be a number of tokens a second above 0")
        return v


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
        None, description="Replaces the built-in question rendering: a template with {question}, "
        "{context} and {options}, or a file holding one (relative to this file)."
    )
    generation: GenerationOverride | None = Field(None, description="Overrides of the file's generation.")
    gpus: int | None = Field(
        None, ge=0, description="GPUs the model's pod requests (for vllm also its tensor-parallel size, "
        "locally too); left out: what its backend's section below says (local models: sized from the "
        "weights). 0: no GPU; an hf model then runs on CPU."
    )
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
    def _template(cls, v: str | None, info: ValidationInfo) -> str | None:
        return resolve_template(v, info)

    @model_validator(mode="after")
    def _folder_is_its_own(self) -> ModelBase:
        try:
            check_folder_name(self.model_dir, "its folder")
        except ValueError as e:
            raise ValueError(f"{e}; give the model another 'name'") from None
        return self

    @property
    def model_dir(self) -> str:
        return self.name or self.id.replace("/", "_")
