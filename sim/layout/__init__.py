"""Flash layouts: where each weight lives in the flash file, as (offset, length) extents.

``build_layout(name, model, dtype, **options)`` with names ``layer_major``, ``bundled`` and ``coactivation``
(options: ``friends [L, n_neurons]`` or ``masks [T, L, n_neurons]`` bool from a trace).
"""

from __future__ import annotations

from typing import Any

from sim.layout.base import EMBEDDING_OPS, EMBEDDINGS, BaseLayout, Layout, coalesce
from sim.layout.bundled import BundledLayout
from sim.layout.coactivation import CoactivationLayout, closest_friends
from sim.layout.layer_major import LayerMajorLayout
from sim.models.profile import ModelProfile

LAYOUT_NAMES = ("layer_major", "bundled", "coactivation")

__all__ = [
    "EMBEDDINGS",
    "EMBEDDING_OPS",
    "LAYOUT_NAMES",
    "BaseLayout",
    "BundledLayout",
    "CoactivationLayout",
    "LayerMajorLayout",
    "Layout",
    "build_layout",
    "closest_friends",
    "coalesce",
]


def build_layout(name: str, model: ModelProfile, dtype: str, **options: Any) -> BaseLayout:
    """A layout by name; unknown names or options raise ValueError naming the value."""
    if name == "layer_major" and not options:
        return LayerMajorLayout(model, dtype)
    if name == "bundled" and not options:
        return BundledLayout(model, dtype)
    if name == "coactivation":
        if set(options) == {"friends"}:
            return CoactivationLayout(model, dtype, options["friends"])
        if set(options) == {"masks"}:
            return CoactivationLayout.from_masks(model, dtype, options["masks"])
        raise ValueError(f"coactivation layout needs exactly one of friends= or masks= (got {sorted(options)})")
    if name not in LAYOUT_NAMES:
        raise ValueError(f"unknown layout {name!r}; known: {', '.join(LAYOUT_NAMES)}")
    raise ValueError(f"layout {name!r} takes no options (got {sorted(options)})")
