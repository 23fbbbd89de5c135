"""The mypyc build of the hot modules (``worker.compiled``, ``.ci/compile.py``): in use, equal to
the source, never stale.

``.ci/dev setup`` builds it, so every other test runs the compiled modules, as the image does;
these tests compare the decoders with the pure-Python module loaded from the same source file
(``tests/functional/test_compiled_sinks.py`` compares the sinks' requests).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import worker
from tests.strategies import items
from worker import attributes, compiled
from worker.errors import RecordError

SOURCE = Path(worker.__file__).parent / "attributes.py"  # attributes.__file__ is the extension module


def _pure() -> ModuleType:
    """``worker/attributes.py`` executed as plain Python (under another name: no swap)."""
    spec = importlib.util.spec_from_file_location("worker_attributes_pure", SOURCE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PURE = _pure()


def _json(doc: Any) -> bytes:
    """A document's bytes; what json_item leaves to the documents' default hook written by repr."""
    return orjson.dumps(doc, default=lambda o: sorted(map(repr, o)) if isinstance(o, frozenset) else repr(o))


def _outcome(fn: Any, *args: Any) -> Any:
    try:
        return ("value", fn(*args))
    except RecordError as exc:
        return ("error", exc.reason, exc.field)


def test_the_compiled_modules_are_in_use():
    # .ci/dev setup builds them (it needs a C compiler, as the image build does); if this fails
    # after an edit of one of them, run `bash .ci/dev setup` to rebuild.
    assert compiled.ACTIVE, "no build of these sources (worker.compiled.MODULES): run `bash .ci/dev setup`"
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    for source in compiled.MODULES:
        module = importlib.import_module(compiled.module_name(source))
        assert (module.__file__ or "").endswith(suffixes), source
    assert type(attributes.decode_item).__name__ == "builtin_function_or_method"
    assert type(PURE.decode_item).__name__ == "function"


@settings(max_examples=150, deadline=None)
@given(old=items, new=items, binary=st.sampled_from(["base64", "bytes"]))
def test_compiled_and_pure_decoders_agree(old, new, binary):
    c, p = attributes, PURE
    wire_old, wire_new = p.encode_item(old, binary), p.encode_item(new, binary)
    assert c.encode_item(old, binary) == wire_old
    assert c.encode_item(new, binary) == wire_new
    assert c.decode_item(wire_new, "img") == p.decode_item(wire_new, "img") == new
    for numbers in ("number", "string"):
        assert _json(c.json_item(wire_new, "img", numbers)) == _json(p.json_item(wire_new, "img", numbers))
    for name in set(wire_old) & set(wire_new):
        seen: list[list[str]] = [[], []]
        for module, out in zip((c, p), seen, strict=True):
            compared: list[tuple[Any, Any, str]] = []

            def compare(a: Any, b: Any, path: str, out: list[str], compared: list[Any] = compared) -> None:
                compared.append((a, b, path))
                if a != b:
                    out.append(path)

            module.walk_raw(wire_old[name], wire_new[name], name, out, compare=compare, fields=("o", "n"))
            out.append(repr(compared))
        assert seen[0] == seen[1]


@pytest.mark.parametrize(
    "wire",
    [
        {"a": {"X": "1"}},
        {"a": {"N": "abc"}},
        {"a": {"N": "1e200"}},
        {"a": {"N": "NaN"}},
        {"a": {"B": "***"}},
        {"a": {"M": {"b": {"L": [{"S": 1}]}}}},
        {"a": {"S": "x", "N": "1"}},
        {"a": "plain"},
        {"a": {"S": "\ud800"}},
        {"\udc00": {"S": "x"}},
        {"a": {"NS": ["1", "x"]}},
        {"a": {"BOOL": "yes"}},
    ],
)
def test_compiled_and_pure_decoders_refuse_alike(wire):
    assert _outcome(attributes.decode_item, wire, "img") == _outcome(PURE.decode_item, wire, "img")
    assert _outcome(attributes.json_item, wire, "img", "number") == _outcome(PURE.json_item, wire, "img", "number")
    assert _outcome(attributes.decode_item, wire, "img")[0] == "error"


def _loaded(package_parent: Path, env: dict[str, str] | None = None) -> list[str]:
    """``worker.compiled.ACTIVE`` and the file each compiled module is loaded from, in a fresh
    process that imports ``worker`` from ``package_parent``."""
    code = (
        "import importlib, worker.compiled as c\n"
        "print(c.ACTIVE)\n"
        f"for m in {[compiled.module_name(s) for s in compiled.MODULES]!r}: print(importlib.import_module(m).__file__)"
    )
    run_env = {**os.environ, **(env or {}), "PYTHONPATH": str(package_parent)}
    done = subprocess.run(  # cwd: `python -c` puts it first on sys.path
        [sys.executable, "-c", code], env=run_env, cwd=package_parent, capture_output=True, text=True, check=True
    )
    return done.stdout.split()


def test_a_build_from_other_sources_is_never_used(tmp_path):
    package = Path(worker.__file__).parent
    for copy, edit in (("whole", None), ("edited", "sinks/archive.py")):
        shutil.copytree(package, tmp_path / copy / "worker", ignore=shutil.ignore_patterns("__pycache__"))
        if edit:
            with (tmp_path / copy / "worker" / edit).open("a") as f:
                f.write("\n# edited after the build\n")
        active, *files = _loaded(tmp_path / copy)
        assert all(f.startswith(str(tmp_path / copy)) for f in files)
        if edit is None:  # the copy is a working build: the mechanism, not the test, decides below
            assert active == "True" and not any(f.endswith(".py") for f in files)
        else:  # one module edited: all of them run from source (a group is used whole or not at all)
            assert active == "False" and all(f.endswith(".py") for f in files)


@pytest.mark.parametrize("missing", ["the stamp", "the shared library", "one module"])
def test_a_partial_build_is_never_used(tmp_path, missing):
    package = tmp_path / "worker"
    shutil.copytree(Path(worker.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__"))
    gone = {
        "the stamp": package / compiled.STAMP,
        "the shared library": next(package.glob("_mypyc__mypyc.*")),
        "one module": next(package.glob("sinks/search/docs.*.so")),
    }[missing]
    gone.unlink()
    active, *files = _loaded(tmp_path)
    assert active == "False" and all(f.endswith(".py") for f in files)


def test_worker_pure_python_turns_the_build_off():
    package_parent = Path(worker.__file__).parent.parent
    active, *files = _loaded(package_parent, {"WORKER_PURE_PYTHON": "1"})
    assert active == "False" and all(f.endswith(".py") for f in files)
    assert len(files) == len(compiled.MODULES)
