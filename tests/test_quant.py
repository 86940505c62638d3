"""Weight formats as the numpy backend applies them: group rules, levels, and the file's own Q4_1 reproduced."""

from __future__ import annotations

import numpy as np
import pytest

from sim.lab.quant import FORMATS, fake_quantize, quantize_weights


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_each_group_holds_at_most_its_levels_and_finer_formats_err_less(fmt):
    spec = FORMATS[fmt]
    w = np.random.default_rng(0).standard_normal((16, 128)).astype(np.float32)
    q = fake_quantize(w, fmt)
    groups = q.reshape(16, -1, spec.group)
    assert max(len(np.unique(g)) for g in groups.reshape(-1, spec.group)) <= 2**spec.bits
    assert np.linalg.norm(q - w) / np.linalg.norm(w) < {8: 0.01, 4: 0.1, 3: 0.25, 2: 0.4}[spec.bits]


def test_q4_0_follows_ggufs_rule():
    x = np.array([[-2.0, 1.0, 0.5, 0.0] + [0.0] * 28], np.float32)  # largest magnitude -2 -> d = 0.25
    q = fake_quantize(x, "q4_0")
    assert q[0, :4].tolist() == [-2.0, 1.0, 0.5, 0.0]  # all on the grid (q - 8) * 0.25
    assert fake_quantize(np.full((1, 32), 0.3, np.float32), "q4_0")[0, 0] == pytest.approx(0.3, rel=1e-3)


@pytest.mark.model
def test_requantizing_the_files_q4_1_weights_as_q4_1_reproduces_them(smollm):
    _, w = smollm[:2]
    _, error = quantize_weights(w, "q4_1", "ffn")
    assert error < 1e-6  # the file stores Q4_1: the same rule on its own grid changes (almost) nothing
    _, error4 = quantize_weights(w, "hqq4_g64", "ffn")
    assert 0.01 < error4 < 0.2
