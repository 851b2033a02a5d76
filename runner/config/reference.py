"""The models.yaml reference (docs/reference/models-yaml.md), generated from the config models.

Every field's type, default and description come from the pydantic models themselves, so the
reference cannot drift from what is accepted; a test fails when the committed file is stale.

    python -m runner.config.reference > docs/reference/models-yaml.md
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from runner.benchmarks.source import BenchmarkSource
from runner.config.backends import DEFAULT_BACKEND, APIModel, Descriptor, ModelSpec, descriptors
from runner.config.base import (
    BACKEND_SECRETS,
    ClusterConfig,
    Generation,
    GenerationOverride,
    ModelBase,
    Placement,
    Prices,
    Resources,
    SecretNames,
    Toleration,
)
from runner.config.run import RunConfig

HEADER = """\
# models.yaml reference

Generated from the config models' own field descriptions by
`python -m runner.config.reference > docs/reference/models-yaml.md`; do not edit by hand.
Unknown keys are errors. How the pieces fit together: [configuration](../configuration.md).
"""


def _type(annotation: Any) -> str:
    if annotation == ModelSpec:
        return "[model entry](#a-model-entry)"  # validated by the config of its backend
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _type(typing.get_args(annotation)[0])
    if annotation is GenerationOverride:
        return "[generation](#generation) keys"
    if origin is Literal:
        return " / ".join(f"`{a}`" for a in typing.get_args(annotation))
    if origin in (Union, types.UnionType):
        parts = [a for a in typing.get_args(annotation) if a is not type(None)]
        shown = " or ".join(_type(a) for a in parts)
        return shown if len(parts) == len(typing.get_args(annotation)) else f"{shown} (optional)"
    if origin in (list, tuple):
        (inner, *_) = typing.get_args(annotation) or (Any,)
        return f"list of {_type(inner)}"
    if origin is dict:
        return "mapping"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"[{annotation.__name__}](#{annotation.__name__.lower()})"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
        if isinstance(value, BaseModel):
            return "see below"
        return f"`{value!r}`" if value not in ([], {}) else "empty"
    if field.default is None or field.default is PydanticUndefined:
        return "none"
    return f"`{field.default}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _rows(model: type[BaseModel], skip: set[str], defaults: dict[str, str]) -> list[str]:
    rows = []
    for name, field in model.model_fields.items():
        if name in skip or field.exclude:
            continue
        default, meaning = defaults.get(name) or _default(field), _cell(field.description or "")
        rows.append(f"| `{name}` | {_type(field.annotation)} | {default} | {meaning} |")
    return rows


def _table(model: type[BaseModel], skip: set[str] | None = None, defaults: dict[str, str] | None = None,
           extra_rows: list[str] | None = None) -> str:
    head = "| key | type | default | meaning |\n| --- | --- | --- | --- |"
    return head + "\n" + "\n".join(_rows(model, skip or set(), defaults or {}) + (extra_rows or [])) + "\n"


def _overridden(config: type[BaseModel], base: type[BaseModel]) -> set[str]:
    """Keys of ``base`` whose default ``config`` changes: its own table shows them again."""
    return {n for n, f in base.model_fields.items() if n != "backend"
            and n in config.model_fields and _default(config.model_fields[n]) != _default(f)}


def _per_backend(key: str, base: type[BaseModel]) -> str:
    """A key every backend of ``base`` defaults differently: each backend's default, named."""
    shown = [f"`{d.config.model_fields[key].default}` ({d.name})" for d in descriptors()
             if issubclass(d.config, base) and not d.config.model_fields[key].is_required()]
    return "per backend: " + ", ".join(shown) if shown else ""


def _jobs(d: Descriptor) -> str:
    """What a Kubernetes Job of this backend gets, from its descriptor."""
    image = "the GPU runner image (`cluster.image`)" if d.image == "gpu" else \
        "the CPU runner image (`cluster.cpu_image`, default `cluster.image`)"
    if d.sized == "gpus":
        size = "GPUs and memory sized from the model's weights when `gpus` is left out"
    elif d.sized == "memory":
        size = "memory sized from the model's weights, no GPU unless `gpus` asks"
    else:
        size = "`cluster.cpu_resources`, no GPU unless `gpus` asks"
    secrets = "".join(f"; `{s.env or 'api_key_env'}` from the Secret `cluster.secrets.{s.secret.key}`"
                      + (" (optional)" if s.optional else "") for s in d.secrets)
    return f"Its Jobs: {image}, {size}{secrets}."


def _secret_rows() -> list[str]:
    return [f"| `{s.key}` | str | `{s.default}` | Secret with {_cell(s.holds)} (backend "
            f"{', '.join(d.name for d in descriptors() if any(e.secret == s for e in d.secrets))}). |"
            for s in BACKEND_SECRETS.values()]


def undocumented() -> list[str]:
    """``Model.field`` for every field without a description (the test wants none)."""
    models: list[type[BaseModel]] = [RunConfig, Generation, GenerationOverride, ClusterConfig, Placement,
                                     Toleration, Resources, SecretNames, Prices, ModelBase, APIModel,
                                     BenchmarkSource]
    models += [d.config for d in descriptors()]
    return [f"{m.__name__}.{n}" for m in models for n, f in m.model_fields.items()
            if not f.exclude and not (f.description or "").strip()]


def render_reference() -> str:
    out = [HEADER]
    out.append("## Top level\n\n" + _table(RunConfig))
    out.append("## generation\n\nDecoding settings for every generative model; a model's own "
               "`generation:` replaces only the keys it gives.\n\n" + _table(Generation))
    prefixes = ", ".join(f"`{p}`" for d in descriptors() for p in d.id_prefixes)
    out.append("## A model entry\n\nEvery entry takes these keys, whatever its `backend`. `backend` may "
               f"be left out: ids starting with {prefixes} mean their API; anything else means "
               f"`{DEFAULT_BACKEND}`.\n\n"
               + _table(ModelBase, defaults={"backend": "inferred from `id`"}))
    common = set(ModelBase.model_fields)
    out.append("### Keys of every API model\n\n"
               + _table(APIModel, common, defaults={"api_key_env": _per_backend("api_key_env", APIModel)}))
    api_keys = common | set(APIModel.model_fields)
    for d in descriptors():
        base = APIModel if issubclass(d.config, APIModel) else ModelBase
        skip = (api_keys if base is APIModel else common) - _overridden(d.config, base)
        extra = f" (pip extra `{d.extra}`)" if d.extra else ""
        out.append(f"### backend: {d.name}\n\n{d.summary}{extra}. {_jobs(d)}\n\n" + _table(d.config, skip))
    for model in (BenchmarkSource, Prices, ClusterConfig, Placement, Toleration, Resources, SecretNames):
        doc = " ".join((model.__doc__ or "").strip().split("\n\n")[0].split()).replace("``", "`")
        skip = set(Placement.model_fields) if model is ClusterConfig else set()
        note = " It also takes every [Placement](#placement) key." if model is ClusterConfig else ""
        rows = _secret_rows() if model is SecretNames else None
        out.append(f"## {model.__name__}\n\n{doc}{note}\n\n" + _table(model, skip, extra_rows=rows))
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    print(render_reference(), end="")
