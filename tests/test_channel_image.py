"""ActiveFlow's op -> channel -> layer layout as a real file: one read per kept channel serves a whole group, and
what it serves is the model's columns, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from sim.config.profiles import load_model
from sim.errors import SimError
from sim.lab.flash_image import ChannelImage, FlashImage, MissingExtentError, random_weights, write_channel_image
from sim.lab.flash_image.channels import op_weight


@pytest.fixture(scope="module")
def small():
    profile = load_model("smollm2-135m").model_copy(update={"n_layers": 6, "d_ff": 128, "vocab_size": 64})
    return profile, random_weights(profile, seed=3)[1]


@pytest.mark.parametrize("layout", ["op_channel_layer", "layer_channel"])
def test_group_reads_serve_every_layers_columns_bit_for_bit(tmp_path, small, layout):
    profile, weights = small
    write_channel_image(weights, profile, layout, 3, tmp_path / "img", "fp16")
    img, rng = ChannelImage.open(tmp_path / "img"), np.random.default_rng(0)
    for first in (0, 3):
        kept = {op: np.sort(rng.choice(op_weight(weights.layers[0], op).shape[1], 7, replace=False))
                for op in img.layout.ops}  # fmt: skip
        x = {op: rng.standard_normal(op_weight(weights.layers[0], op).shape[1]).astype(np.float32)
             for op in img.layout.ops}  # fmt: skip
        check = img.verify_group(weights, first, kept, x)
        assert check.bit_exact
        per_channel = 1 if layout == "op_channel_layer" else 3  # a grouped extent holds the channel of 3 layers
        assert check.n_reads == 7 * len(img.layout.ops) * per_channel


def test_a_column_never_read_is_an_error_and_the_neuron_reader_refuses_the_file(tmp_path, small):
    profile, weights = small
    write_channel_image(weights, profile, "op_channel_layer", 3, tmp_path / "img", "fp16")
    img = ChannelImage.open(tmp_path / "img")
    data = img.read(img.layout.group_extents("up", 0, np.array([1, 2])))
    assert img.columns(data, "up", 2, np.array([2])).shape == (profile.d_ff, 1)
    with pytest.raises(MissingExtentError):
        img.columns(data, "up", 2, np.array([3]))
    with pytest.raises(SimError, match="channel-layout image"):
        FlashImage.open(tmp_path / "img")
