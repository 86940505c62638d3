"""Row caches (sim/cache.py): the window, LFU and LRU keep the protocol's accounting; each keeps what its policy
says; llm_in_flash runs with any of them."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.cache import LFUCache, LRUCache
from sim.lif.bits import pack_rows, unpack_rows
from sim.lif.window import SlidingWindow
from tests.test_lif import TINY, ArraySource, _correlated_masks, _ctx, _plans, _policy


def _stream(seed: int, T: int = 30, L: int = 2, n: int = 70, density: float = 0.15) -> np.ndarray:
    return _correlated_masks(seed, T, L, n, density)


def _steps(cache, stream):
    for need in stream:
        before = unpack_rows(cache.resident_bits, stream.shape[2])
        yield need, before, cache.step_bits(pack_rows(need))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), capacity=st.integers(0, 40), kind=st.sampled_from(["lfu", "lru"]))
def test_counter_caches_keep_the_protocols_accounting(seed, capacity, kind):
    stream = _stream(seed)
    cache = (LFUCache if kind == "lfu" else LRUCache)(2, 70, capacity)
    for need, before, step in _steps(cache, stream):
        read, load, evict, after = step.read, step.load, step.evict, step.resident
        assert (read == (need & ~before)).all()  # what is needed and not resident comes from flash
        assert not (load & ~read).any() and not (evict & ~before).any()
        assert (after == ((before & ~evict) | load)).all()
        assert (after.sum(axis=1) <= capacity).all()
        assert (step.resident_counts() == after.sum(axis=1)).all()


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), capacity=st.integers(1, 40))
def test_lfu_refuses_a_row_only_for_rows_used_at_least_as_often(seed, capacity):
    stream = _stream(seed)
    cache = LFUCache(2, 70, capacity)
    for need, _, step in _steps(cache, stream):
        after, refused = step.resident, step.read & ~step.load
        for layer in range(2):
            evictable = cache.counts[layer][after[layer] & ~need[layer]]
            if refused[layer].any() and evictable.size:
                assert cache.counts[layer][refused[layer]].max() <= evictable.min()
            if refused[layer].any():  # a refused row means the layer is full
                assert after[layer].sum() == capacity


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), capacity=st.integers(1, 40))
def test_lru_holds_the_most_recently_used_rows(seed, capacity):
    stream = _stream(seed)
    cache = LRUCache(2, 70, capacity)
    for _, _, step in _steps(cache, stream):
        after = step.resident
        for layer in range(2):
            used = cache.last[layer] >= 0
            held, out = cache.last[layer][after[layer]], cache.last[layer][used & ~after[layer]]
            if out.size:
                assert held.min() >= out.max() and after[layer].sum() == capacity


def test_the_window_is_a_row_cache_whose_reads_are_all_kept():
    stream = _stream(3)
    window = SlidingWindow(2, 70, 3)
    for need, before, step in _steps(window, stream):
        assert step.read_bits is None and (step.read == (need & ~before)).all()
        assert (step.read_flat() == step.load_flat()).all()


@pytest.mark.parametrize("kind", ["lfu", "lru"])
def test_llm_in_flash_reads_what_its_cache_misses_and_holds_at_most_its_rows(kind):
    masks = _correlated_masks(5, 30, 3, 256, 0.05)
    policy = _policy(_ctx(TINY, ArraySource(masks)), predictor="oracle", window_k=2, capacity_tokens=30, cache=kind)
    rows = policy.matrix.capacity
    for t in range(30):
        before = unpack_rows(policy.window.resident_bits, 256)
        plans = _plans(policy, t)
        for layer, plan in enumerate(plans):
            missed = np.flatnonzero(masks[t, layer] & ~before[layer])
            assert (plan.preload == policy.layout.neuron_extents(layer, missed)).all()
        assert (policy.window.resident_bits is not None) and (policy.matrix.n_rows <= rows).all()
        assert policy.step_stats()["neurons_read"] >= policy.step_stats()["neurons_loaded"]


def test_lfu_beats_the_window_on_a_stream_with_a_hot_set_at_equal_rows():
    rng = np.random.default_rng(0)
    hot = np.zeros((1, 200), bool)
    hot[0, :20] = True  # used by every token
    stream = np.stack([hot | (rng.random((1, 200)) < 0.1) for _ in range(200)])  # plus 10% noise a token
    rows = 60
    hits = {}
    for name, cache in {"window": SlidingWindow(1, 200, 2, np.array([rows])), "lfu": LFUCache(1, 200, rows)}.items():
        read = sum(int(step.read.sum()) for _, _, step in _steps(cache, stream))
        hits[name] = 1 - read / stream.sum()
    assert hits["lfu"] > hits["window"]


def test_lru_keeps_a_tokens_rows_it_already_held_when_the_token_needs_more_than_fit():
    cache = LRUCache(1, 8, 2)
    cache.step_bits(pack_rows(np.array([[1, 1, 0, 0, 0, 0, 0, 0]], bool)))
    step = cache.step_bits(pack_rows(np.array([[1, 1, 1, 0, 0, 0, 0, 0]], bool)))
    assert np.flatnonzero(step.read[0]).tolist() == [2] and not step.load.any()  # row 2: for this token only
    assert np.flatnonzero(step.resident[0]).tolist() == [0, 1] and not step.evict.any()
