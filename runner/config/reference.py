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
from runner.config.backends import DESCRIPTORS, APIModel
from runner.config.base import (
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
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        inner = typing.get_args(annotation)[0]
        members = typing.get_args(inner) or (inner,)
        if all(isinstance(m, type) and issubclass(m, ModelBase) for m in members):
            return "[model entry](#a-model-entry)"  # the models union, discriminated by backend
        return _type(inner)
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


def _rows(model: type[BaseModel], skip: set[str]) -> list[str]:
    rows = []
    for name, field in model.model_fields.items():
        if name in skip or field.exclude:
            continue
        desc = (field.description or "").replace("|", "\\|").replace("\n", " ")
        rows.append(f"| `{name}` | {_type(field.annotation)} | {_default(field)} | {desc} |")
    return rows


def _table(model: type[BaseModel], skip: set[str] | None = None) -> str:
    head = "| key | type | default | meaning |\n| --- | --- | --- | --- |"
    return head + "\n" + "\n".join(_rows(model, skip or set())) + "\n"


def undocumented() -> list[str]:
    """``Model.field`` for every field without a description (the test wants none)."""
    models: list[type[BaseModel]] = [RunConfig, Generation, GenerationOverride, ClusterConfig, Placement,
                                     Toleration, Resources, SecretNames, Prices, ModelBase, APIModel,
                                     BenchmarkSource]
    models += [d.config for d in DESCRIPTORS]
    return [f"{m.__name__}.{n}" for m in models for n, f in m.model_fields.items()
            if not f.exclude and not (f.description or "").strip()]


def render_reference() -> str:
    out = [HEADER]
    out.append("## Top level\n\n" + _table(RunConfig))
    out.append("## generation\n\nDecoding settings for every generative model; a model's own "
               "`generation:` replaces only the keys it gives.\n\n" + _table(Generation))
    out.append("## A model entry\n\nEvery entry takes these keys, whatever its `backend`. "
               "`backend` may be left out: ids starting with "
               + ", ".join(f"`{p}`" for d in DESCRIPTORS for p in d.id_prefixes)
               + " mean their API; anything else means `hf`.\n\n" + _table(ModelBase))
    common = set(ModelBase.model_fields)
    out.append("### Keys of every API model\n\n" + _table(APIModel, common))
    api_keys = common | set(APIModel.model_fields)
    for d in DESCRIPTORS:
        skip = api_keys if issubclass(d.config, APIModel) else common
        extra = f" (pip extra `{d.extra}`)" if d.extra else ""
        out.append(f"### backend: {d.name}\n\n{d.summary}{extra}.\n\n" + _table(d.config, skip))
    for model in (BenchmarkSource, Prices, ClusterConfig, Placement, Toleration, Resources, SecretNames):
        doc = (model.__doc__ or "").strip().split("\n\n")[0]
        skip = set(Placement.model_fields) if model is ClusterConfig else set()
        note = " It also takes every [Placement](#placement) key." if model is ClusterConfig else ""
        out.append(f"## {model.__name__}\n\n{doc}{note}\n\n" + _table(model, skip))
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    print(render_reference(), end="")
