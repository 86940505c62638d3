"""numpy kernel backend (llama2.c style): Config / Weights / RunState, dense and sparse kernels, forward pass.

See :mod:`sim.lab.kernels.forward` for the hook interface (observer and FFN neuron selector).
"""

from sim.lab.kernels.forward import (
    FfnSelector,
    Hooks,
    LayerActivations,
    as_index_arrays,
    block,
    decode_step,
    generate_greedy,
    prefill,
)
from sim.lab.kernels.model import LayerWeights, ModelConfig, RunState, Weights, rope_inv_freq
from sim.lab.kernels.sparse import Touched

__all__ = [
    "FfnSelector",
    "Hooks",
    "LayerActivations",
    "LayerWeights",
    "ModelConfig",
    "RunState",
    "Touched",
    "Weights",
    "as_index_arrays",
    "block",
    "decode_step",
    "generate_greedy",
    "prefill",
    "rope_inv_freq",
]
