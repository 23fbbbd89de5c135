"""The mypyc build of ``worker.attributes`` (``.ci/compile.py``): in use, equal to the source, never stale.

``.ci/dev setup`` builds it, so every other test runs the compiled decoders, as the image does;
these tests compare them with the pure-Python module loaded from the same source file.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.strategies import items
from worker import attributes
from worker.errors import RecordError

SOURCE = Path(attributes.__file__)


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


def test_the_compiled_decoders_are_in_use():
    # .ci/dev setup builds them (it needs a C compiler, as the image build does); if this fails
    # after an edit of worker/attributes.py, run `bash .ci/dev setup` to rebuild.
    assert attributes.COMPILED, "no build of this worker/attributes.py: run `bash .ci/dev setup`"
    assert type(attributes.decode_item).__name__ == "builtin_function_or_method"
    assert not PURE.COMPILED
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


def test_a_build_from_another_source_is_never_used(tmp_path):
    assert attributes.compiled_build(SOURCE) is not None
    edited = tmp_path / "attributes.py"
    edited.write_bytes(SOURCE.read_bytes() + b"\n# edited after the build\n")
    assert attributes.compiled_build(edited) is None
    assert attributes.compiled_build(SOURCE, module="worker._no_such_build") is None


def test_worker_pure_python_turns_the_build_off():
    env = {**os.environ, "WORKER_PURE_PYTHON": "1"}
    code = "import worker.attributes as a; print(a.COMPILED, type(a.decode_item).__name__)"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "function"]
