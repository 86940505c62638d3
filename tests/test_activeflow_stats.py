"""ActiveFlow's statistics for every op input: the hit-rate curve from a cold cache, and a small run of the real
model (residual-stream inputs predict the next layer's channels; attention and FFN outputs do not)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from sim.cli import main
from sim.lab.activeflow_stats import context_curve


def test_a_context_that_repeats_one_set_hits_everything_after_its_first_token():
    x = np.tile(np.r_[np.ones(4), np.zeros(6)], (2 * 5, 3, 1)).astype(np.float32)  # [T, L, 10]: 4 channels on
    curve = context_curve(x, np.repeat([0, 1], 5), sp=0.6, capacity=0.4)  # active = the 4; cache of 4
    for policy in ("lfu", "lru"):
        hit = curve[curve.policy == policy].set_index("n_tokens").hit_rate
        assert hit[1] == 0.0 and hit[5] == pytest.approx(4 / 5)  # cold start, then every channel cached


@pytest.mark.model
def test_every_op_input_is_measured_and_only_residual_inputs_predict_across_layers(model_path, tmp_path):
    exp = {"kind": "activeflow_stats", "name": "tiny", "tokens_per_context": 16, "contexts_per_task": 2,
           "cache_fractions": [0.2], "max_distance": 1}  # fmt: skip
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(exp))
    assert main(["run", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    cross = pd.read_csv(tmp_path / "out" / "cross_layer.csv").set_index("input")
    assert set(cross.index) == {"attn_in", "o_in", "mlp_in", "down_in"}
    assert cross.loc["attn_in", "precision"] > 0.6 and cross.loc["mlp_in", "precision"] > 0.6
    assert abs(cross.loc["down_in", "precision"] - 0.4) < 0.05  # chance: 1 - sparsity
    assert (tmp_path / "out" / "activeflow_stats.png").is_file()
