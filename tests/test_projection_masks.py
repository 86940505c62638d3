"""ProjectedSource.masks from the per-source-neuron count tables equals the per-target comparison it replaces
(codes gathered to every target neuron and compared with its code threshold) and the float definition
``|act| * gain > theta``, on the committed SmolLM2 trace projected onto OPT-6.7B and Llama-2-7B shapes and on
tiny traces (including > 255 copies per source neuron, arbitrary code thresholds and a non-log8 encoding)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sim.traces.encoding import Encoding, codes_above, log8, log8_table
from sim.traces.format import TraceWriter
from sim.traces.projection import ProjectedSource, opt_6_7b_density
from sim.traces.source import TraceSource
from sim.traces.topvalues import ProjectedValues

TRACE = Path(__file__).resolve().parents[1] / "traces" / "smollm2-135m.trace"
TINY = {"name": "tiny", "n_layers": 4, "d_model": 8, "d_ff": 64, "n_heads": 2, "n_kv_heads": 1, "head_dim": 4}


def _by_gather(proj: ProjectedSource, start: int, stop: int) -> np.ndarray:
    """The reference: every target neuron's source code against its code threshold [T, L', F']."""
    codes = proj.base.reader.read("ffn_act", start, stop, decoded=False)  # [T, L, F]
    return codes_above(codes[:, proj.layers][:, :, proj.neurons], proj._cthr)


def _by_float(proj: ProjectedSource, start: int, stop: int) -> np.ndarray:
    values = proj.base.values(start, stop)  # [T, L, F]
    return np.stack([proj._projected(values, l) > proj.thresholds[l] for l in range(proj.n_layers)], axis=1)


def _tiny_trace(path: Path, encoding: Encoding, n_tokens: int = 90) -> TraceSource:
    rng = np.random.default_rng(3)
    L, F = TINY["n_layers"], TINY["d_ff"]
    arrays = {
        "ffn_act": np.exp(rng.normal(-2.0, 2.0, (n_tokens, L, F))).astype(np.float32),
        "token_id": np.zeros(n_tokens, np.int32),
        "position": np.arange(n_tokens, dtype=np.int32),
        "task_id": np.zeros(n_tokens, np.int16),
        "context_id": np.zeros(n_tokens, np.int32),
    }
    with TraceWriter(path, TINY, ["ffn_act"], chunk_tokens=32, encodings={"ffn_act": encoding}) as w:
        w.append(arrays)
        w.close()
    return TraceSource(path, "dense")


def _ranges(rng: np.random.Generator, n_tokens: int, n: int = 4) -> list[tuple[int, int]]:
    starts = rng.integers(0, n_tokens - 1, n)
    return [(int(a), int(min(n_tokens, a + rng.integers(1, 70)))) for a in starts]


@pytest.fixture(scope="module")
def smollm2() -> TraceSource:
    return TraceSource(TRACE, "dense", 1)


@pytest.mark.parametrize(("name", "n_layers", "d_ff"), [("opt-6.7b", 32, 16384), ("llama-2-7b", 32, 11008)])
def test_count_table_masks_equal_gathered_comparison_on_real_trace(smollm2, name, n_layers, d_ff):
    rng = np.random.default_rng(d_ff)
    proj = ProjectedSource(smollm2, n_layers, d_ff, opt_6_7b_density(n_layers), rng, calib_tokens=64, name=name)
    for start, stop in _ranges(rng, proj.n_tokens):
        got = proj.masks(start, stop)
        assert got.shape == (stop - start, n_layers, d_ff) and got.any()
        np.testing.assert_array_equal(got, _by_gather(proj, start, stop))


@pytest.mark.parametrize(("n_layers", "d_ff", "sigma"), [(3, 150, 0.25), (6, 64 * 300, 0.5), (2, 40, 0.0)])
def test_count_table_masks_equal_float_definition_on_tiny_trace(tmp_path, n_layers, d_ff, sigma):
    base = _tiny_trace(tmp_path / "t.trace", log8(keep_top=0.5))
    density = np.linspace(0.02, 0.3, n_layers)
    proj = ProjectedSource(base, n_layers, d_ff, density, np.random.default_rng(1), gain_sigma=sigma, calib_tokens=60)
    assert proj._copies[0].dtype == (np.uint16 if d_ff > 255 * 64 else np.uint8)  # > 255 copies need 16 bits
    for start, stop in [(0, 90), (5, 37), (31, 33), (89, 90), (7, 7)]:
        got = proj.masks(start, stop)
        np.testing.assert_array_equal(got, _by_float(proj, start, stop))
        np.testing.assert_array_equal(got, _by_gather(proj, start, stop))


def test_count_tables_hold_for_any_code_thresholds(tmp_path):
    """Thresholds need not follow the gains: any cthr in [-1, 255] (-1: always active) gives the same masks."""
    base = _tiny_trace(tmp_path / "t.trace", log8())
    proj = ProjectedSource(base, 5, 700, 0.1, np.random.default_rng(2), calib_tokens=60)
    rng = np.random.default_rng(4)
    for high in (3, 60, 256):
        proj._cthr = rng.integers(-1, high, (5, 700))
        proj._copies = proj._copy_tables(proj._cthr)
        np.testing.assert_array_equal(proj.masks(10, 80), _by_gather(proj, 10, 80))
    assert proj.masks(0, 3).any() and not proj.masks(0, 3).all()


def test_non_log8_traces_use_the_float_comparison(tmp_path):
    base = _tiny_trace(tmp_path / "t.trace", Encoding("int8c", {"levels": 127}))
    proj = ProjectedSource(base, 3, 200, 0.1, np.random.default_rng(5), calib_tokens=60)
    assert proj._cthr is None and proj._copies is None
    np.testing.assert_array_equal(proj.masks(3, 50), _by_float(proj, 3, 50))


@pytest.mark.parametrize(("sigma", "d_ff", "calib"), [(0.0, 64 * 5, 30), (0.25, 150, 90), (1.5, 1000, 7), (0.3, 40, 1)])
def test_calibration_is_np_quantile_of_the_projected_values(tmp_path, sigma, d_ff, calib):
    """The band bisection gives np.quantile's numbers bit for bit, also with ties (sigma 0: copies share values)."""
    base = _tiny_trace(tmp_path / "t.trace", log8(keep_top=0.4))
    density = np.array([0.0005, 0.004, 0.03, 0.1, 0.2, 0.249, 0.3, 0.35])
    proj = ProjectedSource(base, 8, d_ff, density, np.random.default_rng(6), gain_sigma=sigma, calib_tokens=calib)
    values = base.values(0, calib)
    want = [np.quantile(proj._projected(values, l), 1.0 - density[l]) for l in range(8)]
    assert proj.thresholds.tolist() == want


def test_projected_values_give_every_order_statistic_exactly():
    """k-th largest of table[codes][:, neurons] * gain for every k, with zeros, few distinct codes and equal gains."""
    table, rng = log8_table(-16.0, 8), np.random.default_rng(0)
    for _ in range(60):
        n, n_src, n_dst = int(rng.integers(1, 10)), int(rng.integers(1, 8)), int(rng.integers(1, 30))
        codes = np.where(rng.random((n, n_src)) < rng.random(), 0, rng.integers(0, 256, (n, n_src))).astype(np.uint8)
        if rng.random() < 0.3:  # few distinct codes: many ties
            codes = np.minimum(codes, rng.integers(1, 4)).astype(np.uint8)
        neurons = rng.integers(0, n_src, n_dst)
        gain = np.exp(rng.choice([0.0, 0.25, 2.0]) * rng.standard_normal(n_dst)).astype(np.float32)
        top = np.sort((table[codes][:, neurons] * gain).reshape(-1))[::-1]  # [N] descending
        values = ProjectedValues(codes, table, neurons, gain)
        for k in range(1, len(top) + 1):
            assert values.largest(k, max(k - 1, 1)) == (top[k - 1], top[max(k - 1, 1) - 1])


def test_reach_is_the_lowest_code_whose_float32_product_reaches_x():
    """Exactly at a product and just above it (float32 rounding puts products on either side of table[c] * g)."""
    table, rng = log8_table(-16.0, 8), np.random.default_rng(1)
    gain = np.exp(0.5 * rng.standard_normal(64)).astype(np.float32)
    values = ProjectedValues(np.ones((1, 1), np.uint8), table, np.zeros(64, np.int64), gain)
    products = table[None, :] * gain[:, None]  # [F', 256] float32
    for c in range(1, 256):
        for j in range(64):
            x = float(products[j, c])
            assert values.reach(x)[j] == c
            assert values.reach(np.nextafter(x, np.inf))[j] == c + 1


@pytest.mark.parametrize("encoding", [log8(keep_top=0.5), Encoding("int8c", {"levels": 127})])
def test_active_counts_are_the_masks_summed_over_tokens(tmp_path, encoding):
    base = _tiny_trace(tmp_path / "t.trace", encoding)
    proj = ProjectedSource(base, 3, 300, 0.15, np.random.default_rng(7), calib_tokens=60)
    for start, stop in [(0, 90), (3, 70), (40, 41), (5, 5)]:
        counts = proj.active_counts(start, stop)
        assert counts.shape == (3, 300) and counts.dtype == np.int64
        np.testing.assert_array_equal(counts, proj.masks(start, stop).sum(axis=0))
    frequency = proj.masks(0, 90).mean(axis=0, dtype=np.float32)  # how LlmInFlash weighs false positives
    np.testing.assert_array_equal(proj.active_counts(0, 90).astype(np.float32) / 90, frequency)
