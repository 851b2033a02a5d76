"""Where a model's pods go: the file's placement with the model's own keys laid over it."""

from __future__ import annotations

from runner.config import ClusterConfig, Placement


def merged_placement(cluster: ClusterConfig, model: Placement | None) -> Placement:
    """The file-wide placement with the model's keys laid over it, key by key."""
    base = {k: getattr(cluster, k) for k in Placement.model_fields}
    if model is not None:
        base.update({k: getattr(model, k) for k in Placement.model_fields if getattr(model, k) is not None})
    return Placement.model_validate(base)
