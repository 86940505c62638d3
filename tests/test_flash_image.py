"""Flash image: write a layout, read back exactly the charged extents, verify bit-exactly."""

from __future__ import annotations

import numpy as np
import pytest

from sim.lab.flash_image import FlashImage, MissingExtentError, write_image
from sim.lab.kernels.model import ModelConfig, Weights
from sim.layout import build_layout

CFG = ModelConfig(arch="llama", n_layers=2, d_model=32, d_ff=48, n_heads=4, n_kv_heads=2, head_dim=8,
                  vocab_size=40, context_length=64, tied_embeddings=True, name="tiny")  # fmt: skip


@pytest.fixture(scope="module")
def weights() -> Weights:
    return Weights.random(CFG, np.random.default_rng(0))


def _image(tmp_path, weights, name: str, dtype: str) -> FlashImage:
    profile = CFG.profile()
    options = {}
    if name == "coactivation":
        options["masks"] = np.random.default_rng(1).random((50, 2, 48)) < 0.2
    layout = build_layout(name, profile, dtype, **options)
    write_image(weights, profile, layout, tmp_path / "img.bin", dtype)
    return FlashImage.open(tmp_path / "img.bin")


@pytest.mark.parametrize("layout", ["layer_major", "bundled", "coactivation"])
@pytest.mark.parametrize("dtype", ["fp16", "fp32"])
def test_charged_extents_rebuild_the_layer_bit_exactly(tmp_path, weights, layout, dtype):
    img = _image(tmp_path, weights, layout, dtype)
    x = np.random.default_rng(2).standard_normal(32).astype(np.float32)
    neurons = np.array([0, 5, 6, 7, 30, 47])
    for layer in range(2):
        res = img.verify_layer(weights, layer, neurons, x)
        assert res.bit_exact and res.max_abs_diff == 0.0
        assert res.bytes_read == img.layout.neuron_extents(layer, neurons)[:, 1].sum()


def test_a_neuron_whose_extent_was_not_read_is_an_error_naming_layer_and_neuron(tmp_path, weights):
    img = _image(tmp_path, weights, "bundled", "fp16")
    buf = img.read_extents(img.layout.neuron_extents(1, np.array([3, 4])))
    assert img.neurons(1, buf, np.array([3, 4]))["up"].shape == (2, 32)
    with pytest.raises(MissingExtentError, match="layer 1: neuron 9 was used but its extent was not read"):
        img.neurons(1, buf, np.array([3, 9]))
    partial = img.read_extents(img.layout.neuron_extents(1, np.array([9])) - [[0, 1]])  # one byte short
    with pytest.raises(MissingExtentError, match="neuron 9"):
        img.neurons(1, partial, np.array([9]))


def test_layer_major_needs_every_matrix_row_of_a_neuron(tmp_path, weights):
    img = _image(tmp_path, weights, "layer_major", "fp16")
    ext = img.layout.neuron_extents(0, np.array([7]))  # gate, up, down rows
    with pytest.raises(MissingExtentError, match="layer 0: neuron 7"):
        img.neurons(0, img.read_extents(ext[:2]), np.array([7]))


def test_coactivation_friend_arrives_with_the_bundle(tmp_path, weights):
    img = _image(tmp_path, weights, "coactivation", "fp16")
    friend = int(img.layout.friends[0, 11])
    buf = img.read_extents(img.layout.neuron_extents(0, np.array([11])))
    rows = img.neurons(0, buf, np.array([friend]))
    assert np.array_equal(rows["gate"][0], weights.layers[0].gate[friend].astype(np.float16).astype(np.float32))


def test_image_file_is_the_layout_size_and_embeddings_come_first(tmp_path, weights):
    img = _image(tmp_path, weights, "bundled", "fp32")
    assert img.path.stat().st_size == img.layout.total_bytes == CFG.profile().total_bytes("fp32")
    head = np.fromfile(img.path, np.float32, count=CFG.d_model)
    assert np.array_equal(head, weights.tok_embd[0])


def test_write_rejects_a_quantised_dtype(tmp_path, weights):
    layout = build_layout("bundled", CFG.profile(), "q4_0")
    with pytest.raises(ValueError, match="dtype must be one of fp32, fp16 \\(got 'q4_0'\\)"):
        write_image(weights, CFG.profile(), layout, tmp_path / "x.bin", "q4_0")


@pytest.mark.model
def test_real_smollm2_image_verifies_bit_exactly(tmp_path, smollm):
    from sim.config.profiles import load_model

    _, w, _ = smollm
    profile = load_model("smollm2-135m")
    layout = build_layout("bundled", profile, "fp16")
    write_image(w, profile, layout, tmp_path / "smol.bin", "fp16")
    img = FlashImage.open(tmp_path / "smol.bin")
    rng = np.random.default_rng(0)
    for layer in (0, 15, 29):
        neurons = np.flatnonzero(rng.random(profile.d_ff) < 0.05)
        x = rng.standard_normal(profile.d_model).astype(np.float32)
        assert img.verify_layer(w, layer, neurons, x).bit_exact
    with pytest.raises(MissingExtentError, match="layer 29: neuron"):
        img.neurons(29, img.read_extents(layout.neuron_extents(29, neurons[:-1])), neurons)
