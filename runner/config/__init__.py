"""models.yaml: the typed, validated description of a run.

``load_config`` turns pydantic's errors into one line a person can act on:
``models.yaml:12: models[2].quantization: expected one of 'none', '8bit', '4bit'``.
The backends' own keys and what the rest of medbench knows about each backend live in
``runner.config.backends``.
"""

from runner.config.backends import (
    DESCRIPTORS,
    APIModel,
    Descriptor,
    EchoModel,
    EmbedModel,
    GeminiModel,
    HFModel,
    ModelSpec,
    OpenAIModel,
    VLLMModel,
    backend_names,
    descriptor,
    descriptors,
    infer_backend,
    register,
)
from runner.config.base import (
    ClusterConfig,
    Generation,
    GenerationOverride,
    ModelBase,
    Placement,
    Prices,
    Resources,
    SecretNames,
    Strict,
    Toleration,
    check_run_id,
    check_safe_name,
    check_template,
)
from runner.config.loading import format_validation_error, load_config, parse_config
from runner.config.run import RunConfig

__all__ = [
    "APIModel", "DESCRIPTORS", "ClusterConfig", "Descriptor", "EchoModel", "EmbedModel",
    "GeminiModel", "Generation", "GenerationOverride", "HFModel", "ModelBase", "ModelSpec", "OpenAIModel",
    "Placement", "Prices", "Resources", "RunConfig", "SecretNames", "Strict", "Toleration", "VLLMModel",
    "check_run_id",
    "backend_names", "check_safe_name", "check_template", "descriptor", "descriptors",
    "format_validation_error", "infer_backend", "load_config", "parse_config", "register",
]
