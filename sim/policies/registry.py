"""Policy registry: config class (discriminated by ``name``) -> policy class.

Adding a policy = one module with a config class and a policy class, and one line in ``_POLICIES``.
"""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field

from sim.policies import activeflow, baselines, kv_offload, llm_in_flash, moe_offload
from sim.policies.base import Policy

_POLICIES = {
    "all_dram": (baselines.AllDramConfig, baselines.AllDram),
    "naive": (baselines.NaiveConfig, baselines.Naive),
    "hybrid": (baselines.HybridConfig, baselines.Hybrid),
    "llm_in_flash": (llm_in_flash.LlmInFlashConfig, llm_in_flash.LlmInFlash),
    "kv_offload": (kv_offload.KVOffloadConfig, kv_offload.KVOffload),
    "activeflow": (activeflow.ActiveFlowConfig, activeflow.ActiveFlow),
    "moe_offload": (moe_offload.MoEOffloadConfig, moe_offload.MoEOffload),
}

PolicyConfig = Annotated[Union[tuple(cfg for cfg, _ in _POLICIES.values())], Field(discriminator="name")]  # noqa: UP007


def make_policy(config) -> Policy:
    """Instantiate the policy a (validated) policy config names."""
    return _POLICIES[config.name][1](config)
