"""Cases of one run share activation sources through build_activations' cache. A source made from random draws
(projection, synthetic) may only be shared when the draws would be the same, and the case's generator must end
where building it would have left it: results with and without the cache are identical."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import TypeAdapter

from sim.config.activations import ActivationsConfig
from sim.config.profiles import load_model
from sim.engine.activations import build_activations

TRACE = "traces/smollm2-135m.trace"
CONFIGS = {
    "projection": {"source": "projection", "path": TRACE, "calib_tokens": 32},
    "synthetic": {"source": "synthetic", "path": TRACE, "calib_tokens": 32, "n_tokens": 8},
}
MODEL = {"projection": "opt-6.7b", "synthetic": "smollm2-135m"}


def _build(kind: str, seed: int, cache: dict | None):
    cfg = TypeAdapter(ActivationsConfig).validate_python(CONFIGS[kind])
    rng = np.random.default_rng(seed)
    src = build_activations(cfg, load_model(MODEL[kind]), rng, cache=cache)
    return src, rng


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_same_generator_state_shares_the_source_and_leaves_the_generator_as_a_fresh_build(kind):
    cache: dict = {}
    first, rng_first = _build(kind, 7, cache)
    second, rng_second = _build(kind, 7, cache)
    fresh, rng_fresh = _build(kind, 7, None)
    assert second is first
    assert fresh is not first
    for rng in (rng_first, rng_second):  # the next draw a case makes is the one it makes without the cache
        assert rng.bit_generator.state == rng_fresh.bit_generator.state
    np.testing.assert_array_equal(second.masks(0, 4), fresh.masks(0, 4))


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_another_generator_state_builds_its_own_source(kind):
    cache: dict = {}
    a, _ = _build(kind, 7, cache)
    b, _ = _build(kind, 8, cache)
    assert b is not a
    assert not np.array_equal(a.masks(0, 4), b.masks(0, 4))  # other draws: another projection / sample
