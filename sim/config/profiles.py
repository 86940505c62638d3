"""Finding and loading hardware and model profiles by name (or by path), resolving ``extends``."""

from __future__ import annotations

from pathlib import Path

from sim.config.base import deep_merge, load_yaml, validate
from sim.config.hardware import HardwareProfile
from sim.errors import ConfigError
from sim.models.profile import ModelProfile

REPO_ROOT = Path(__file__).resolve().parents[2]
HARDWARE_DIR = REPO_ROOT / "hardware_profiles"
MODEL_DIR = Path(__file__).resolve().parents[1] / "models" / "profiles"


def _names(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.yaml"))


def hardware_names() -> list[str]:
    return _names(HARDWARE_DIR)


def model_names() -> list[str]:
    return _names(MODEL_DIR)


def _locate(name: str, folder: Path, what: str, source: str, key: str, beside: Path | None = None) -> Path:
    """A profile by name, or by a path to a YAML file: relative paths resolve from ``beside`` (the folder of the
    file that names the profile) first, then from the working directory."""
    as_path = Path(name)
    if as_path.suffix in (".yaml", ".yml"):
        for candidate in ([beside / as_path] if beside and not as_path.is_absolute() else []) + [as_path]:
            if candidate.is_file():
                return candidate
    candidate = folder / f"{name}.yaml"
    if candidate.is_file():
        return candidate
    known = ", ".join(_names(folder))
    raise ConfigError(source, key, f"unknown {what} profile; known: {known}", name)


def _raw_hardware(
    name: str, source: str, key: str, seen: tuple[str, ...] = (), beside: Path | None = None
) -> tuple[dict, Path]:
    path = _locate(name, HARDWARE_DIR, "hardware", source, key, beside)
    data = load_yaml(path)
    parent = data.get("extends")
    if parent is None:
        return data, path
    if not isinstance(parent, str):
        raise ConfigError(path, "extends", "must be the name of (or path to) another hardware profile", parent)
    if parent in seen:
        raise ConfigError(path, "extends", "circular extends", parent)
    base, _ = _raw_hardware(parent, str(path), "extends", (*seen, name), path.parent)
    base.pop("name", None)
    base.pop("description", None)
    return deep_merge(base, data), path


def load_hardware(
    name: str,
    source: str = "<command line>",
    key: str = "hardware",
    overrides: dict | None = None,
    beside: Path | None = None,
) -> HardwareProfile:
    """Load hardware profile ``name`` (a name in hardware_profiles/ or a path to a YAML file, relative to
    ``beside`` -- the experiment's folder -- or the working directory).

    ``overrides`` (an experiment's ``hardware_overrides``) are deep-merged last; errors in them name the
    experiment file and the ``hardware_overrides.`` key.
    """
    data, path = _raw_hardware(name, source, key, beside=beside)
    profile = validate(HardwareProfile, data, path)
    if not overrides:
        return profile
    return validate(HardwareProfile, deep_merge(data, overrides), source, prefix="hardware_overrides")


def load_model(
    name: str, source: str = "<command line>", key: str = "model", beside: Path | None = None
) -> ModelProfile:
    """Load model profile ``name`` (a name in sim/models/profiles/ or a path to a YAML file, as for hardware)."""
    path = _locate(name, MODEL_DIR, "model", source, key, beside)
    return validate(ModelProfile, load_yaml(path), path)
