"""Neuron sets of the LLM-in-a-Flash mechanisms against small, obviously correct references: packed bits, the
sliding window, the neuron matrix (property tests on random mask sequences), the mask stream's replay, and the
statistical predictor's distribution (per-neuron frequencies, independence) over many seeded draws."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.lif import bits
from sim.lif.masks import MaskStream
from sim.lif.memmgmt import NeuronMatrix
from sim.lif.statistical import StatisticalPredictor
from sim.lif.window import SlidingWindow
from sim.traces.source import SourceBase


@st.composite
def mask_sequences(draw, max_t: int = 12):
    """(masks [T, L, n] bool, k): random sizes (n not a multiple of 64 too) and densities."""
    seed = draw(st.integers(0, 2**32 - 1))
    t, layers = draw(st.integers(1, max_t)), draw(st.integers(1, 3))
    n, density = draw(st.sampled_from([1, 7, 64, 65, 130, 200])), draw(st.sampled_from([0.0, 0.05, 0.3, 0.9, 1.0]))
    return np.random.default_rng(seed).random((t, layers, n)) < density, draw(st.integers(1, 6))


# ---- packed bits ----------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(mask_sequences(max_t=1))
def test_bits_round_trip_and_flat_indices_equal_flatnonzero(case):
    mask = case[0][0]  # [L, n]
    packed = bits.pack_rows(mask)
    assert (bits.unpack_rows(packed, mask.shape[1]) == mask).all()
    assert bits.flat_indices(packed, mask.shape[1]).tolist() == np.flatnonzero(mask).tolist()
    assert bits.row_counts(packed).tolist() == mask.sum(axis=1).tolist()
    shuffled = np.random.default_rng(0).permutation(np.flatnonzero(mask))
    assert (bits.from_flat(shuffled, *mask.shape) == packed).all()


@pytest.mark.parametrize(("n", "density"), [(16384, 0.03), (20001, 0.5), (70000, 0.001)])
def test_flat_indices_of_large_sets_equal_flatnonzero(n, density):
    """Rows of thousands of 16-bit chunks, with and without padding bits, sparse and dense."""
    mask = np.random.default_rng(n).random((4, n)) < density
    mask[0, 0] = mask[-1, -1] = True  # the first and last neuron
    assert bits.flat_indices(bits.pack_rows(mask), n).tolist() == np.flatnonzero(mask).tolist()


# ---- sliding window vs sets -----------------------------------------------------------------------------
def _reference_window(masks: np.ndarray, k: int):
    """Per step (load, evict, resident) as sets of (layer, neuron), straight from the definition."""
    stored = [set(zip(*np.nonzero(m), strict=True)) for m in masks]
    resident: set = set()
    for t, now in enumerate(stored):
        after = set().union(*stored[max(0, t - k + 1) : t + 1])
        yield now - resident, resident - after, after
        resident = after


def _pairs(mask: np.ndarray) -> set:
    return set(zip(*np.nonzero(mask), strict=True))


@settings(max_examples=80, deadline=None)
@given(mask_sequences())
def test_window_matches_the_set_definition(case):
    masks, k = case
    win = SlidingWindow(masks.shape[1], masks.shape[2], k)
    for mask, (load, evict, resident) in zip(masks, _reference_window(masks, k), strict=True):
        step = win.step(mask)
        assert _pairs(step.load) == load and _pairs(step.evict) == evict and _pairs(step.resident) == resident
        assert step.load_flat().tolist() == np.flatnonzero(step.load).tolist()
        assert step.evict_flat().tolist() == np.flatnonzero(step.evict).tolist()
        assert step.resident_counts().tolist() == step.resident.sum(axis=1).tolist()
        assert (win.resident == step.resident).all()


# ---- neuron matrix vs a per-layer list ------------------------------------------------------------------
def _reference_matrix_step(rows: list[int], insert: list[int], evict: set[int]) -> int:
    """One layer: fill each hole below the new end (ascending) with the last surviving row; append in order."""
    new_end = len(rows) - len(evict)
    holes = [s for s in range(new_end) if rows[s] in evict]
    movers = [rows[s] for s in reversed(range(new_end, len(rows))) if rows[s] not in evict]
    for hole, neuron in zip(holes, movers, strict=True):
        rows[hole] = neuron
    del rows[new_end:]
    rows.extend(insert)
    return len(holes)


@settings(max_examples=80, deadline=None)
@given(mask_sequences())
def test_matrix_rows_and_moves_match_the_list_reference(case):
    masks, k = case
    n_layers, n = masks.shape[1:]
    win = SlidingWindow(n_layers, n, k)
    mat = NeuronMatrix(n, np.full(n_layers, n), row_bytes=2.0)
    ref: list[list[int]] = [[] for _ in range(n_layers)]
    for mask in masks:
        step = win.step(mask)
        got = mat.step_flat(step.load_flat(), step.evict_flat())
        load, evict = step.load, step.evict
        moves = [_reference_matrix_step(ref[l], np.flatnonzero(load[l]).tolist(), set(np.flatnonzero(evict[l])))
                 for l in range(n_layers)]  # fmt: skip
        assert got.moves.tolist() == moves and got.copied_bytes.tolist() == [2.0 * m for m in moves]
        assert got.appended_bytes.tolist() == [2.0 * c for c in load.sum(axis=1)]
        for layer in range(n_layers):
            assert mat.neuron_at[layer, : mat.n_rows[layer]].tolist() == ref[layer]
            assert (mat.neuron_at[layer, mat.n_rows[layer] :] == -1).all()
            assert (mat.slot_of[layer, ref[layer]] == np.arange(len(ref[layer]))).all()
        assert (mat.resident == step.resident).all()


def test_matrix_wider_than_int16_rows_matches_the_list_reference():
    """Matrices of 2^15 rows or more keep their rows as int32 (else int16): the same moves and rows."""
    n, n_layers = 40000, 2
    rng = np.random.default_rng(4)
    win, mat = SlidingWindow(n_layers, n, 2), NeuronMatrix(n, np.full(n_layers, n), row_bytes=1.0)
    assert mat._slot.dtype == np.int32
    ref: list[list[int]] = [[] for _ in range(n_layers)]
    for density in (0.9, 0.5, 0.95, 0.2):
        step = win.step(rng.random((n_layers, n)) < density)
        got = mat.step_flat(step.load_flat(), step.evict_flat())
        load, evict = step.load, step.evict
        moves = [_reference_matrix_step(ref[l], np.flatnonzero(load[l]).tolist(), set(np.flatnonzero(evict[l])))
                 for l in range(n_layers)]  # fmt: skip
        assert got.moves.tolist() == moves and max(got.n_rows) >= 2**15
        for layer in range(n_layers):
            assert mat.neuron_at[layer, : mat.n_rows[layer]].tolist() == ref[layer]


# ---- mask stream replay ---------------------------------------------------------------------------------
class _Source(SourceBase):
    def __init__(self, masks):
        self._masks, self.n_tokens = masks, len(masks)

    def masks(self, start, stop):
        return self._masks[start:stop]


@pytest.mark.parametrize("cache", [0, 4, 7, 20])
def test_stream_replays_its_cache_and_continues_the_same_stream(cache):
    masks = np.random.default_rng(1).random((20, 2, 100)) < 0.1
    pred = StatisticalPredictor(0.9, 0.1)
    fresh = MaskStream(_Source(masks), "statistical", 0, pred, seed=5, block=3)
    want = [fresh.token(t) for t in range(12)]
    stream = MaskStream(_Source(masks), "statistical", 0, pred, seed=5, block=3, cache_tokens=cache)
    for t in range(7):  # a dry run over 7 steps
        stream.token(t)
    stream.reset()
    for t in range(12):
        got = stream.token(t)
        assert (got.pred_bits == want[t].pred_bits).all() and got.n_fn == want[t].n_fn
        assert got.n_true == masks[t].sum() and got.n_pred.tolist() == got.pred.sum(axis=1).tolist()
    with pytest.raises(ValueError, match="expected decode step 12, got 3"):
        stream.token(3)


# ---- statistical predictor: exact distribution ----------------------------------------------------------
def _expected_probability(true: np.ndarray, weights: np.ndarray, recall: float, fp_rate: float) -> np.ndarray:
    """[L, n] the documented per-neuron probability of being predicted."""
    neg = ~true
    scale = fp_rate * neg.sum(axis=1) / (weights * neg).sum(axis=1)  # [L]
    return np.where(true, recall, np.minimum(1.0, weights * scale[:, None]))


def _case(seed: int = 0):
    """Two layers of 400 neurons: weights over 4 decades (several buckets), zeros, and hot neurons clipped at 1."""
    rng = np.random.default_rng(seed)
    weights = 10.0 ** rng.uniform(-3, 0.3, (2, 400))
    weights[:, :20] = 0.0  # never false positives
    weights[0, 20:30] = 50.0  # clipped: p = 1 (a dense bucket)
    true = rng.random((2, 400)) < 0.1
    return true, weights


def _draws(pred: StatisticalPredictor, true: np.ndarray, n_draws: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([pred.predict(true, rng) for _ in range(n_draws)])  # [R, L, n]


@pytest.mark.parametrize("weighting", ["frequency", "uniform"])
def test_statistical_per_neuron_frequencies_are_the_documented_probabilities(weighting):
    true, weights = _case()
    if weighting == "uniform":
        weights = np.ones_like(weights)
    pred = StatisticalPredictor(0.9, 0.15, None if weighting == "uniform" else weights)
    n_draws = 3000
    freq = _draws(pred, true, n_draws, seed=1).sum(axis=0)  # [L, n] times predicted
    p = _expected_probability(true, weights, 0.9, 0.15)
    var = n_draws * p * (1 - p)
    assert (np.abs(freq - n_draws * p) <= 5 * np.sqrt(var) + 1e-9).all()  # every neuron (p in {0, 1} exactly)
    ok = var > 0
    chi2 = float((((freq - n_draws * p) ** 2)[ok] / var[ok]).sum())  # ~ chi-square with ok.sum() dof
    dof = int(ok.sum())
    assert abs(chi2 - dof) < 5 * np.sqrt(2 * dof), (chi2, dof)


def test_statistical_draws_are_independent_between_neurons():
    """Counts per layer and draw have the variance of independent Bernoullis (fixed-size sampling would give
    less), and pairs of neurons in one bucket co-occur at p_i * p_j."""
    true, weights = _case(2)
    pred = StatisticalPredictor(0.9, 0.15, weights)
    n_draws = 3000
    draws = _draws(pred, true, n_draws, seed=3)  # [R, L, n]
    p = _expected_probability(true, weights, 0.9, 0.15)
    fp = draws & ~true  # [R, L, n]
    for layer in range(2):
        count = fp[:, layer].sum(axis=1)  # [R]
        q = p[layer][~true[layer]]
        var = float((q * (1 - q)).sum())
        assert abs(count.mean() - q.sum()) < 5 * np.sqrt(var / n_draws)
        assert abs(count.var() / var - 1) < 5 * np.sqrt(2 / n_draws)  # sample variance of ~normal counts
    # pairs of inactive neurons, both with p in (0.1, 0.9): joint frequency = product
    cand = np.flatnonzero(~true[1] & (p[1] > 0.1) & (p[1] < 0.9))[:30]
    i, j = cand[:-1], cand[1:]
    joint = (fp[:, 1, i] & fp[:, 1, j]).sum(axis=0)  # [pairs]
    pij = p[1, i] * p[1, j]
    assert (np.abs(joint - n_draws * pij) <= 5 * np.sqrt(n_draws * pij * (1 - pij))).all()


def test_statistical_predictor_depends_only_on_its_generator():
    true, weights = _case(4)
    pred = StatisticalPredictor(0.95, 0.07, weights)
    a = _draws(pred, true, 3, seed=7)
    b = _draws(StatisticalPredictor(0.95, 0.07, weights), true, 3, seed=7)
    assert (a == b).all() and not (a[0] == a[1]).all()


# ---- projection calibration: np.quantile's numbers from the top values only ------------------------------
@pytest.mark.parametrize("size", [1, 2, 7, 1000, 12345])
def test_linear_quantile_pieces_reproduce_np_quantile(size):
    from sim.traces.projection import _lerp, _linear_quantile_index

    x = np.random.default_rng(size).random(size).astype(np.float32)
    xs = np.sort(x)
    for q in [0.0, 0.03, 0.5, 0.7, 0.9671, 0.999, 1.0, *np.random.default_rng(1).random(20)]:
        prev, upper, gamma = _linear_quantile_index(size, np.float64(q))
        assert _lerp(xs[prev], xs[upper], gamma) == np.quantile(x, np.float64(q))


def test_projection_thresholds_are_np_quantile_of_the_projected_values():
    from pathlib import Path

    from sim.traces.projection import ProjectedSource, opt_6_7b_density
    from sim.traces.source import TraceSource

    trace = Path(__file__).resolve().parents[1] / "traces" / "smollm2-135m.trace"
    base = TraceSource(trace, "dense", 1)
    for sigma, layers, d_ff in [(0.25, 5, 4096), (0.0, 3, 1000), (0.6, 2, 3000)]:
        proj = ProjectedSource(base, layers, d_ff, opt_6_7b_density(layers), np.random.default_rng(layers),
                               gain_sigma=sigma, calib_tokens=48)  # fmt: skip
        values = base.values(0, 48)
        want = [np.quantile(proj._projected(values, l), 1.0 - proj.density[l]) for l in range(layers)]
        assert proj.thresholds.tolist() == want


@pytest.mark.parametrize("weighting", ["frequency", "uniform"])
def test_statistical_extremes_predict_nothing_extra_or_everything(weighting):
    true, weights = _case(5)
    weights = None if weighting == "uniform" else weights
    rng = np.random.default_rng(0)
    exact = StatisticalPredictor(1.0, 0.0, weights).predict(true, rng)
    assert (exact == true).all()
    most = StatisticalPredictor(1.0, 1.0, weights).predict(true, rng)  # every neuron unless weights are uneven
    assert most.all() if weights is None else (most[true].all() and not most[~true & (weights == 0)].any())
    assert not StatisticalPredictor(0.0, 0.0, weights).predict(true, rng).any()
