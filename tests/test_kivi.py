"""KIVI's quantized KV cache: keys per channel over token groups, values per token, the recent tokens untouched."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from sim.config.experiment import load_experiment
from sim.engine.simulate import simulate_case
from sim.errors import SimError
from sim.kv.kivi import quantize_kv, quantized_tokens


def test_only_whole_groups_before_the_residual_window_are_quantized():
    assert quantized_tokens(300, 32, 128) == 160 and quantized_tokens(100, 32, 128) == 0
    rng = np.random.default_rng(0)
    k, v = rng.standard_normal((2, 200, 3, 64)).astype(np.float32)
    kq, vq = quantize_kv(k, v, 160, bits=2, group=32)
    assert np.array_equal(kq[160:], k[160:]) and np.array_equal(vq[160:], v[160:])
    keys = kq[:160].reshape(5, 32, 3, 64)  # per (token group, head, channel): at most 4 levels
    assert max(len(np.unique(keys[g, :, h, c])) for g in range(5) for h in range(3) for c in range(64)) <= 4
    values = vq[:160].reshape(160, 3, 2, 32)  # per (token, head, dim group)
    assert max(len(np.unique(values[t, h, d])) for t in range(160) for h in range(3) for d in range(2)) <= 4
    fine, _ = quantize_kv(k, v, 160, bits=8, group=32)
    assert np.abs(fine - k).max() < 0.05 < np.abs(kq - k).max()


def test_kivi_is_refused_by_the_timing_policy_with_a_pointer_to_kv_dtype(tmp_path):
    policy = {"name": "kv_offload", "attention": {"name": "kivi"}}
    exp = {"name": "k", "hardware": "rtx4090-sim-l20", "model": "smollm2-135m", "processor": "gpu",
           "context_tokens": 64, "decode_tokens": 2, "policy": policy}  # fmt: skip
    (tmp_path / "e.yaml").write_text(yaml.safe_dump(exp))
    (case,) = load_experiment(tmp_path / "e.yaml")
    with pytest.raises(SimError, match="kv_dtype"):
        simulate_case(case, timeline=False)
