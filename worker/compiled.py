"""The mypyc build of the per-record hot modules: which modules, and whether the build is used.

``.ci/compile.py`` (run by ``.ci/dev setup`` and the image build) compiles :data:`MODULES` in
place, as one mypyc group: an extension module beside each source file, their shared library
``worker/_mypyc__mypyc*.so``, and :data:`STAMP`, the SHA-256 of every source it was built from.
Python's import system prefers an extension module to the source beside it, so
:func:`guard` (run when ``worker`` is imported, before any of these modules) decides:

- the build is used only when it is whole and every source is byte for byte the one it was made
  from: after an edit, until the next ``.ci/dev setup``, all of them run as Python. All or none,
  because the compiled modules reach each other's classes through their shared library: a
  compiled sink next to a pure-Python spec would see two different ``Aggregate`` classes;
- ``WORKER_PURE_PYTHON=1`` turns it off;
- when it is not used, a finder at the front of ``sys.meta_path`` loads these modules from
  their sources.

Both give the same results (``tests/unit/test_compiled.py`` compares the decoders,
``tests/functional/test_compiled_sinks.py`` the sinks' requests); the build spends 13 to 20% less
CPU per record with every sink than the decoders alone compiled (``bench pipeline``, paired
runs), and the decoders about half their CPU.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType

__all__ = ["ACTIVE", "MODULES", "STAMP", "digests", "guard", "module_name", "status"]

MODULES = (
    "attributes.py",
    "diff.py",
    "shapes.py",
    "archive/layout.py",
    "sinks/aggregates/values.py",
    "sinks/aggregates/spec.py",
    "sinks/aggregates/sink.py",
    "sinks/search/docs.py",
    "sinks/search/sink.py",
    "sinks/archive.py",
)
"""The compiled sources, relative to the package. Chosen by measurement (``bench pipeline``'s
all-sinks row): compiling ``records.py`` is not possible as it stands (its lazy images live in
the instance ``__dict__``, which native classes do not have), and compiling ``decode.py`` made
the row slower (about 110 µs against 75: its calls into msgspec and the Python ``StreamRecord``
pay for the boundary)."""

STAMP = "_compiled.json"
"""Beside the modules in the package: ``{"source path": "sha256"}`` of the build."""

GROUP = "worker._mypyc"
"""The mypyc group: its shared library is the module ``worker._mypyc__mypyc``."""

_LIBRARY = GROUP.removeprefix("worker.").replace(".", "/") + "__mypyc.py"  # as a source path: its extension

ACTIVE = False
"""Whether this process runs the compiled modules (set by :func:`guard`)."""


def module_name(source: str) -> str:
    """The module a source of :data:`MODULES` is: ``sinks/archive.py`` -> ``worker.sinks.archive``."""
    return "worker." + source.removesuffix(".py").replace("/", ".")


def digests(package: Path) -> dict[str, str]:
    """The SHA-256 of each source in :data:`MODULES` under ``package``."""
    return {m: hashlib.sha256((package / m).read_bytes()).hexdigest() for m in MODULES}


def _extension(package: Path, module: str) -> Path | None:
    stem = package / module[: -len(".py")]
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = stem.with_name(stem.name + suffix)
        if candidate.is_file():
            return candidate
    return None


def status(package: Path, environ: Mapping[str, str] = os.environ) -> str:
    """``"compiled"`` (whole, from these sources), ``"absent"`` (no extension module), ``"stale"``
    (built from other sources, or partly missing), or ``"off"`` (``WORKER_PURE_PYTHON`` set in
    ``environ``)."""
    found = [_extension(package, m) is not None for m in (*MODULES, _LIBRARY)]
    if not any(found):
        return "absent"
    if environ.get("WORKER_PURE_PYTHON"):
        return "off"
    try:
        stamp = json.loads((package / STAMP).read_text())
    except (OSError, ValueError):
        return "stale"
    return "compiled" if all(found) and stamp == digests(package) else "stale"


class _Sources:
    """A ``sys.meta_path`` finder: the modules of an unused build at their ``.py`` sources (never
    their extensions)."""

    def __init__(self, package: Path) -> None:
        self.paths = {module_name(m): package / m for m in MODULES}

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        source = self.paths.get(fullname)
        return None if source is None else importlib.util.spec_from_file_location(fullname, source)


def guard(package: Path) -> bool:
    """Use the build of ``package`` if :func:`status` says it is whole and current, else make
    its modules load from source; returns (and sets :data:`ACTIVE`) whether it is used."""
    global ACTIVE
    state = status(package)
    ACTIVE = state == "compiled"
    if state in ("stale", "off") and not any(isinstance(f, _Sources) for f in sys.meta_path):
        sys.meta_path.insert(0, _Sources(package))
    return ACTIVE
