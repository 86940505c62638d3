"""LLM in a Flash mechanisms: sliding window, memory management, predictor."""

from __future__ import annotations

import numpy as np
import pytest

from sim.lif.window import SlidingWindow


def _masks(seed: int, t: int, layers: int, n: int, p: float) -> np.ndarray:
    return np.random.default_rng(seed).random((t, layers, n)) < p  # [T, L, n]


# ---- sliding window -----------------------------------------------------------------------------------
def test_window_closed_form_on_hand_made_masks():
    m = np.array([[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]], bool)[:, None, :]  # [T=4, L=1, n=4]
    win = SlidingWindow(1, 4, k=2)
    steps = [win.step(m[t]) for t in range(4)]
    assert [s.load[0].nonzero()[0].tolist() for s in steps] == [[0, 1], [2], [3], []]
    assert [s.evict[0].nonzero()[0].tolist() for s in steps] == [[], [], [0], [1, 2]]
    assert [s.resident[0].nonzero()[0].tolist() for s in steps] == [[0, 1], [0, 1, 2], [1, 2, 3], [3]]


@pytest.mark.parametrize("k", [1, 2, 5])
def test_resident_is_the_union_of_the_last_k_masks_and_load_is_only_what_was_missing(k):
    masks = _masks(0, 30, 3, 50, 0.1)
    win = SlidingWindow(3, 50, k)
    for t in range(len(masks)):
        before = win.resident.copy()
        step = win.step(masks[t])
        union = masks[max(0, t - k + 1) : t + 1].any(axis=0)
        assert (step.resident == union).all()
        assert (step.load == (masks[t] & ~before)).all()
        assert (step.evict == (before & ~union)).all()
        assert step.resident.sum() == union.sum()


def test_k_1_loads_everything_new_each_token():
    masks = _masks(1, 10, 2, 40, 0.3)
    win = SlidingWindow(2, 40, k=1)
    for t in range(len(masks)):
        step = win.step(masks[t])
        prev = masks[t - 1] if t else np.zeros_like(masks[0])
        assert (step.load == (masks[t] & ~prev)).all()
        assert (step.resident == masks[t]).all()


def test_extra_neurons_stay_resident_like_predicted_ones():
    win = SlidingWindow(1, 4, k=2)
    extra = np.array([[0, 0, 0, 1]], bool)
    step = win.step(np.array([[1, 0, 0, 0]], bool), extra)
    assert step.load[0].tolist() == [True, False, False, True]
    assert (win.missing(np.array([[0, 0, 0, 1]], bool)) == 0).all()


def test_window_rejects_bad_inputs():
    with pytest.raises(ValueError, match="window k must be in 1..65535 \\(got 0\\)"):
        SlidingWindow(2, 4, 0)
    with pytest.raises(ValueError, match="shape \\(3, 4\\), expected \\(2, 4\\)"):
        SlidingWindow(2, 4, 2).step(np.zeros((3, 4), bool))
