"""A real flash image: the model's weights laid out in one file in a chosen :mod:`sim.layout`, a JSON manifest
beside it, and a reader that reconstructs FFN neurons ONLY from the byte extents the simulator charged.

  writer.py  write_image(weights, profile, layout, path, dtype) -> manifest
  reader.py  FlashImage.open(path): read_extents, neurons (missing extent -> MissingExtentError), verify_layer
  channels.py  ActiveFlow's op -> channel -> layer (or layer -> channel) image: write_channel_image, ChannelImage
"""

from sim.lab.flash_image.channels import CHANNEL_LAYOUTS, ChannelImage, write_channel_image
from sim.lab.flash_image.reader import FlashImage, MissingExtentError, VerifyResult
from sim.lab.flash_image.writer import IMAGE_DTYPES, manifest_path, random_weights, write_image

__all__ = [
    "CHANNEL_LAYOUTS",
    "ChannelImage",
    "write_channel_image",
    "IMAGE_DTYPES",
    "FlashImage",
    "MissingExtentError",
    "VerifyResult",
    "manifest_path",
    "random_weights",
    "write_image",
]
