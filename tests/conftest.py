"""Shared fixtures: the SmolLM2 model file (tests marked ``model`` skip when it is not in the cache)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.lab.modelfile.registry import KNOWN_MODELS, cached_path, resolve_model_path

MODEL_NAME = "smollm2-135m"


@pytest.fixture(scope="session")
def model_path() -> Path:
    """Verified path of the SmolLM2 GGUF; skips if absent (a present but corrupt file fails)."""
    if cached_path(KNOWN_MODELS[MODEL_NAME]).is_file():
        return resolve_model_path(MODEL_NAME)
    pytest.skip(f"model file absent: run `python -m sim model fetch {MODEL_NAME}` first")


@pytest.fixture(scope="session")
def smollm(model_path: Path):
    """(cfg, weights, tokenizer) of SmolLM2-135M, loaded once per session."""
    from sim.lab.modelfile import load_model, load_tokenizer, open_gguf

    reader = open_gguf(model_path)
    cfg, w = load_model(reader)
    return cfg, w, load_tokenizer(reader)


@pytest.fixture(scope="session", autouse=True)
def points_dir(tmp_path_factory):
    """Finished points (sim/points.py) go to a folder of this session, never the user's cache."""
    import os

    before = os.environ.get("SIM_POINTS_DIR")
    os.environ["SIM_POINTS_DIR"] = str(tmp_path_factory.mktemp("points"))
    yield
    if before is None:
        os.environ.pop("SIM_POINTS_DIR", None)
    else:
        os.environ["SIM_POINTS_DIR"] = before


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test that uses the model fixtures must be marked ``model`` (so ``-m 'not model'`` really skips it)."""
    for item in items:
        uses = {"model_path", "smollm"} & set(getattr(item, "fixturenames", ()))
        if uses and item.get_closest_marker("model") is None:
            raise pytest.UsageError(f"{item.nodeid} uses {sorted(uses)} but is not marked @pytest.mark.model")
