"""Flash layouts: sizes, non-overlap, chunk sizes and adjacency of extents."""

from __future__ import annotations

import numpy as np
import pytest

from sim.config.profiles import load_model
from sim.layout import EMBEDDING_OPS, EMBEDDINGS, build_layout, closest_friends, coalesce
from sim.models.profile import ATTENTION_OPS, ModelProfile

TINY_GATED = ModelProfile(
    name="tiny-gated", source="test", n_layers=3, d_model=64, d_ff=96, n_heads=4, n_kv_heads=2, head_dim=16,
    vocab_size=100, ffn_kind="swiglu", tied_embeddings=True,
)  # fmt: skip
TINY_RELU = ModelProfile(
    name="tiny-relu", source="test", n_layers=2, d_model=32, d_ff=48, n_heads=2, n_kv_heads=2, head_dim=16,
    vocab_size=50, ffn_kind="relu", max_positions_learned=10,
)  # fmt: skip
TINY_MOE = TINY_GATED.model_copy(update={"name": "tiny-moe", "n_experts": 4, "experts_top_k": 2})


def _friends(model: ModelProfile, seed: int = 0) -> np.ndarray:
    masks = np.random.default_rng(seed).random((40, model.n_layers, model.n_experts * model.d_ff)) < 0.2
    return np.stack([closest_friends(masks[:, i]) for i in range(model.n_layers)])


def _layouts(model: ModelProfile, dtype: str):
    yield build_layout("layer_major", model, dtype)
    yield build_layout("bundled", model, dtype)
    yield build_layout("coactivation", model, dtype, friends=_friends(model))


def _all_extents(layout) -> list[np.ndarray]:
    """One extents array per distinct (layer, op) and per distinct (layer, neuron) primary storage."""
    m = layout.model
    out = [layout.op_extents(EMBEDDINGS, [op]) for op in EMBEDDING_OPS]
    for layer in range(m.n_layers):
        out += [layout.op_extents(layer, [op]) for op in ATTENTION_OPS]
        out += [layout.neuron_extents(layer, np.array([n])) for n in range(layout.n_neurons)]
    return [e for e in out if len(e)]


@pytest.mark.parametrize("model", [TINY_GATED, TINY_RELU, TINY_MOE], ids=lambda m: m.name)
@pytest.mark.parametrize("dtype", ["fp16", "q4_0", "fp32"])
def test_extents_never_overlap_and_stay_inside_the_file(model, dtype):
    for layout in _layouts(model, dtype):
        ext = np.concatenate(_all_extents(layout))
        ext = ext[np.argsort(ext[:, 0])]
        assert (ext[1:, 0] >= ext[:-1, 0] + ext[:-1, 1]).all(), layout.name
        assert ext[0, 0] >= 0 and ext[-1, 0] + ext[-1, 1] <= layout.total_bytes


@pytest.mark.parametrize("model", [TINY_GATED, TINY_RELU, TINY_MOE], ids=lambda m: m.name)
@pytest.mark.parametrize("dtype", ["fp16", "q4_0", "q8_0", "int8"])
def test_layer_major_and_bundled_fill_the_model_exactly(model, dtype):
    for name in ("layer_major", "bundled"):
        layout = build_layout(name, model, dtype)
        assert layout.total_bytes == model.total_bytes(dtype)
        assert layout.padding_bytes == 0
        covered = coalesce(np.concatenate(_all_extents(layout)))
        assert covered.tolist() == [[0, layout.total_bytes]], name


def test_coactivation_stores_the_ffn_twice():
    lay = build_layout("coactivation", TINY_GATED, "fp16", friends=_friends(TINY_GATED))
    extra = TINY_GATED.n_layers * TINY_GATED.ffn_bytes_per_layer("fp16")
    assert lay.total_bytes == TINY_GATED.total_bytes("fp16") + extra


def test_opt_chunk_is_8_kib_unbundled_and_16_kib_bundled():
    opt = load_model("opt-6.7b")
    neurons = np.array([5, 900, 16000])
    lm = build_layout("layer_major", opt, "fp16").neuron_extents(7, neurons)
    bd = build_layout("bundled", opt, "fp16").neuron_extents(7, neurons)
    assert lm.shape == (6, 2) and set(lm[:, 1].tolist()) == {8192}
    assert bd.shape == (3, 2) and set(bd[:, 1].tolist()) == {16384}
    assert build_layout("bundled", opt, "fp32").neuron_extents(0, neurons)[0, 1] == 32768  # paper App. C


def test_gated_bundle_holds_three_rows():
    lay = build_layout("bundled", TINY_GATED, "q4_0")
    assert lay.neuron_extents(0, np.array([3]))[0, 1] == 3 * 64 * 4.5 / 8


def test_bundled_consecutive_neurons_are_adjacent_and_layer_major_are_not_merged_across_ops():
    for model in (TINY_GATED, TINY_RELU):
        bd = build_layout("bundled", model, "fp16").neuron_extents(1, np.arange(10, 20))
        assert (bd[1:, 0] == bd[:-1, 0] + bd[:-1, 1]).all()
        assert len(coalesce(bd)) == 1
        lm = build_layout("layer_major", model, "fp16").neuron_extents(1, np.arange(10, 20))
        assert len(coalesce(lm)) == len(model.ffn_ops)


def test_neuron_mask_and_indices_give_the_same_extents_sorted():
    lay = build_layout("layer_major", TINY_GATED, "fp16")
    mask = np.zeros(96, bool)
    mask[[40, 3, 77]] = True
    by_mask = lay.neuron_extents(2, mask)
    assert (by_mask == lay.neuron_extents(2, np.array([77, 3, 40]))).all()
    assert (np.diff(by_mask[:, 0]) > 0).all()


@pytest.mark.parametrize("model", [TINY_GATED, TINY_MOE], ids=lambda m: m.name)
def test_all_layers_extents_at_once_equal_each_layers(model):
    """neuron_extents_all (one vectorised pass over layers) == neuron_extents layer by layer, every layout."""
    mask = np.random.default_rng(1).random((model.n_layers, model.n_experts * model.d_ff)) < 0.3  # [L, n]
    mask[1] = False  # a layer with nothing to read
    for lay in _layouts(model, "fp16"):
        every = lay.neuron_extents_all(np.flatnonzero(mask))
        assert len(every) == model.n_layers
        for layer, ext in enumerate(every):
            assert np.array_equal(ext, lay.neuron_extents(layer, mask[layer])), (lay.name, layer)


def test_all_layers_extents_reject_unsorted_indices():
    with pytest.raises(ValueError, match="must be sorted, distinct"):
        build_layout("bundled", TINY_GATED, "fp16").neuron_extents_all(np.array([5, 3]))


def test_whole_ffn_op_in_bundled_layout_is_strided_but_all_ffn_ops_coalesce_to_one_extent():
    lay = build_layout("bundled", TINY_GATED, "fp16")
    assert len(lay.op_extents(0, ["up"])) == TINY_GATED.d_ff
    assert len(lay.op_extents(0, ["gate", "up", "down"])) == 1
    assert len(lay.op_extents(0, ["q", "k", "v", "o", "gate", "up", "down"])) == 1


def test_coactivation_read_brings_the_friend():
    friends = _friends(TINY_GATED, seed=3)
    lay = build_layout("coactivation", TINY_GATED, "fp16", friends=friends)
    got = lay.neurons_brought(1, np.array([4, 9]))
    assert set(got.tolist()) == {4, 9, int(friends[1, 4]), int(friends[1, 9])}
    assert lay.neuron_extents(1, np.array([4]))[0, 1] == 2 * lay.neuron_bytes


def test_closest_friend_is_the_most_co_activated_other_neuron():
    mask = np.zeros((6, 4), bool)
    mask[:4, [0, 2]] = True  # 0 and 2 fire together 4 times
    mask[4:, [1, 3]] = True  # 1 and 3 twice
    mask[0, 1] = True  # 1 also once with 0 and 2
    assert closest_friends(mask, block=3).tolist() == [2, 3, 0, 1]


def test_bad_inputs_name_the_value():
    with pytest.raises(ValueError, match="unknown layout 'diagonal'"):
        build_layout("diagonal", TINY_GATED, "fp16")
    with pytest.raises(ValueError, match="neuron index out of range 0..95 \\(got 0..96\\)"):
        build_layout("bundled", TINY_GATED, "fp16").neuron_extents(0, np.array([0, 96]))
    with pytest.raises(ValueError, match="layer 3 out of range"):
        build_layout("bundled", TINY_GATED, "fp16").neuron_extents(3, np.array([0]))
    with pytest.raises(ValueError, match="needs exactly one of friends= or masks="):
        build_layout("coactivation", TINY_GATED, "fp16")


@pytest.mark.parametrize("name", ["layer_major", "bundled", "coactivation"])
def test_placement_rows_of_a_neuron_lie_inside_its_extents(name):
    masks = np.random.default_rng(1).random((30, TINY_GATED.n_layers, TINY_GATED.d_ff)) < 0.3
    lay = build_layout(name, TINY_GATED, "fp16", **({"masks": masks} if name == "coactivation" else {}))
    off, neuron, op_idx, copy = lay.ffn_placement(2)
    assert len(off) == lay.ffn_region_bytes // lay.row_bytes
    for n in (0, 17, 95):
        ext = lay.neuron_extents(2, np.array([n]))
        rows = off[(neuron == n) & (copy == 0)]
        inside = ((rows[:, None] >= ext[:, 0]) & (rows[:, None] + lay.row_bytes <= ext.sum(1))).any(1)
        assert inside.all() and sorted(op_idx[(neuron == n) & (copy == 0)].tolist()) == [0, 1, 2]
