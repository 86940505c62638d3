"""The results folder of a run: written whole or not at all, and never over files this tool did not write.

Rules (``--out DIR``):

- DIR that does not exist is created (with its parents); an **empty** folder is used as if new;
- DIR that exists must be a results folder of this tool: it holds the marker file ``.sparse-llm-sim``, which
  lists every file the tool wrote there. Anything else -- a file, a folder without the marker, a marked folder
  that now also holds a file the tool did not write -- is refused with one line, and nothing is touched;
- the run writes into a hidden sibling ``.DIR.partial-PID``; only when everything (plots included) succeeded
  does it replace DIR. On an error, Ctrl-C or SIGTERM the partial folder is removed; one left by a SIGKILL
  (its process gone) is removed by the next run into the same DIR.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from sim.errors import ConfigError

MARKER = ".sparse-llm-sim"


def _written(folder: Path) -> set[str]:
    """Paths (relative, '/'-separated) of every file below ``folder``, the marker excluded."""
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != MARKER}


def _listed(folder: Path) -> set[str] | None:
    """The files the marker of ``folder`` says the tool wrote, or None if it has no readable marker."""
    try:
        data = json.loads((folder / MARKER).read_text(encoding="utf-8"))
        return set(data["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_out(out: Path, flag: str = "--out") -> None:
    """Refuse (ConfigError, nothing touched) an ``out`` this tool may not write or replace."""
    if str(out) in ("", ".", ".."):
        raise ConfigError(flag, "", "must name a results folder, not the current or parent folder", str(out))
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ConfigError(flag, "", "exists and is not a folder; results go into a folder of their own", str(out))
    if not out.exists() or not any(out.iterdir()):
        return
    listed = _listed(out)
    if listed is None:
        reason = f"holds files this tool did not write (no {MARKER} marker); choose a new or an empty folder"
        raise ConfigError(flag, "", reason, str(out))
    foreign = sorted(_written(out) - listed)
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise ConfigError(flag, "", f"holds files this tool did not write ({shown}); move them first", str(out))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale(out: Path) -> None:
    """Partial folders of earlier runs into ``out`` whose process is gone (killed with SIGKILL)."""
    for stale in out.parent.glob(f".{out.name}.partial-*"):
        pid = stale.name.rsplit("-", 1)[-1].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)) and _listed(stale) is not None:
            shutil.rmtree(stale, ignore_errors=True)


class ResultsFolder:
    """``with ResultsFolder(out) as tmp:`` write into tmp; on success tmp replaces ``out``, else it vanishes.

    ``check_out`` runs on entry (before any work, so a refused --out costs nothing) and again just before the
    replacement (a user may have dropped a file into ``out`` during a long run)."""

    def __init__(self, out: Path, flag: str = "--out"):
        self.out, self.flag = Path(out), flag
        check_out(self.out, flag)

    def __enter__(self) -> Path:
        parent = self.out.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            _remove_stale(self.out)
            self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.partial-{os.getpid()}.", dir=parent))
            self._mark(self.tmp)
        except OSError as err:
            reason = f"cannot create a results folder there ({err.strerror})"
            raise ConfigError(self.flag, "", reason, str(self.out)) from None
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self._replace()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def _mark(self, folder: Path) -> None:
        files = sorted(_written(folder))
        (folder / MARKER).write_text(json.dumps({"tool": "sparse-llm-sim", "files": files}), encoding="utf-8")

    def _replace(self) -> None:
        self._mark(self.tmp)
        check_out(self.out, self.flag)
        if self.out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.partial-{os.getpid()}.", dir=self.out.parent))
            old.rmdir()
            self.out.rename(old)  # holds only files this tool wrote (checked above)
            self.tmp.rename(self.out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            self.tmp.rename(self.out)
