"""Compile the per-record hot modules with mypyc, in place: ``worker.compiled.MODULES``.

    python .ci/compile.py PACKAGE_DIR [--mypyc MYPYC]

Run it with the Python the package runs on: the extension modules are built for it, and mypyc
type-checks the sources against its installed packages (orjson, msgspec, botocore's stubs).
``--mypyc`` names the mypyc command of the environment that has mypyc (the image builds with a
throw-away one); its Python runs the build.

``PACKAGE_DIR`` is the ``worker`` package to build for (the source tree, or the installed copy in
the image). The build runs in a scratch copy of the package's sources, as one mypyc group
(``worker.compiled.GROUP``); the extension modules it makes are copied beside their sources, and
``worker.compiled.STAMP`` records the SHA-256 of each source they were made from. ``worker``
uses them only while every source still has that digest (``worker.compiled.guard``), so a build
left behind by an edit is never run.

Exit status: 0 built (or already built from these sources), 1 the build failed, 3 no C compiler
(nothing built: the modules run as Python, slower; ``worker.compiled`` says how much).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from types import ModuleType

SETUP = """\
from setuptools import setup
from mypyc.build import mypycify

setup(
    name="worker-compiled",
    # Missing stubs (boto3-stubs is a dev dependency; the image has none) type as Any: generic
    # operations there, the same results.
    ext_modules=mypycify(
        ["--ignore-missing-imports", "--python-executable", {python!r}, *{files!r}], group_name={group!r}
    ),
    script_args=["build_ext", "--inplace"],
)
"""


def plan(package: Path) -> ModuleType:
    """``worker/compiled.py`` of ``package``, loaded from its file (the list and the digests have
    one home, and the package being built need not be importable by this Python)."""
    spec = importlib.util.spec_from_file_location("worker_compiled_plan", package / "compiled.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python .ci/compile.py", description=__doc__.splitlines()[0])
    p.add_argument("package", type=Path, help="the worker package directory to build for")
    p.add_argument("--mypyc", default=str(Path(sys.executable).with_name("mypyc")), help="the mypyc command")
    args = p.parse_args(argv)
    package: Path = args.package.resolve()
    compiled = plan(package)
    digests = compiled.digests(package)
    if compiled.status(package, environ={}) == "compiled":  # the files', whatever WORKER_PURE_PYTHON says
        return 0
    if shutil.which(os.environ.get("CC", "cc")) is None:
        sys.stderr.write("compile: no C compiler (cc): the hot modules run as Python\n")
        return 3
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    with tempfile.TemporaryDirectory(prefix="worker-mypyc-") as scratch:
        work = Path(scratch)
        shutil.copytree(package, work / "worker", ignore=shutil.ignore_patterns("*.so", "__pycache__"))
        (work / "setup.py").write_text(
            SETUP.format(python=sys.executable, files=[f"worker/{m}" for m in compiled.MODULES], group=compiled.GROUP)
        )
        builder = Path(args.mypyc).with_name("python")
        done = subprocess.run(
            [str(builder if builder.exists() else sys.executable), "setup.py"],
            cwd=work,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            sys.stderr.write(f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}\ncompile: mypyc failed\n")
            return 1
        made = sorted((work / "worker").rglob(f"*{suffix}"))
        expected = {f"{m[: -len('.py')]}{suffix}" for m in compiled.MODULES}
        if not expected <= {str(ext.relative_to(work / "worker")) for ext in made}:
            sys.stderr.write(f"compile: mypyc did not make every module: {sorted(map(str, made))}\n")
            return 1
        (package / compiled.STAMP).unlink(missing_ok=True)  # no stamp until every module is in place
        for old in {*package.rglob(f"*{suffix}"), *package.glob("_compiled_attributes*")}:  # the last: an older layout
            old.unlink()
        for ext in made:
            target = package / ext.relative_to(work / "worker")
            shutil.copy(ext, target)
    (package / compiled.STAMP).write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
