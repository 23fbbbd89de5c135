"""Compile the decoders' hot module with mypyc: ``worker/attributes.py`` -> ``worker._compiled_attributes``.

    python .ci/compile.py PACKAGE_DIR [--mypyc MYPYC]

Run it with the Python the package runs on (mypyc type-checks the module against that Python's
installed packages: orjson); ``--mypyc`` may come from another environment (the image builds with
a throw-away one).

``PACKAGE_DIR`` is the ``worker`` package to build for (the source tree, or the installed copy in
the image). The build runs in a scratch directory on a copy of ``attributes.py`` (plus
``errors.py``, which it imports) under the module name ``worker._compiled_attributes``, with the
SHA-256 of the source it was made from appended as ``SOURCE_SHA256``; the extension modules it
produces are copied into ``PACKAGE_DIR``. ``worker.attributes`` uses the compiled functions only
when that hash is its own file's, so a build left behind by an older source is ignored, never run.

Exit status: 0 built (or already built from this source), 1 the build failed, 3 no C compiler
(nothing built: the pure-Python module runs, about half as fast on decoding).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

MODULE = "_compiled_attributes"


def built(package: Path, digest: str) -> bool:
    """Whether ``package`` already holds a build of the source with this digest."""
    stamp = package / f"{MODULE}.sha256"
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    return stamp.is_file() and stamp.read_text().strip() == digest and (package / f"{MODULE}{suffix}").is_file()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python .ci/compile.py", description=__doc__.splitlines()[0])
    p.add_argument("package", type=Path, help="the worker package directory to build for")
    p.add_argument("--mypyc", default=str(Path(sys.executable).with_name("mypyc")), help="the mypyc command")
    args = p.parse_args(argv)
    package: Path = args.package.resolve()
    source = (package / "attributes.py").read_bytes()
    digest = hashlib.sha256(source).hexdigest()
    if built(package, digest):
        return 0
    if shutil.which(os.environ.get("CC", "cc")) is None:
        sys.stderr.write("compile: no C compiler (cc): the pure-Python decoders run\n")
        return 3
    with tempfile.TemporaryDirectory(prefix="worker-mypyc-") as scratch:
        work = Path(scratch)
        (work / "worker").mkdir()
        (work / "worker" / "__init__.py").write_text("")
        shutil.copy(package / "errors.py", work / "worker" / "errors.py")
        stamped = source + f'\n\nSOURCE_SHA256 = "{digest}"\n'.encode()
        (work / "worker" / f"{MODULE}.py").write_bytes(stamped)
        done = subprocess.run(
            [args.mypyc, "--python-executable", sys.executable, f"worker/{MODULE}.py"],
            cwd=work,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            sys.stderr.write(f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}\ncompile: mypyc failed\n")
            return 1
        made = sorted((work / "worker").glob(f"{MODULE}*{sysconfig.get_config_var('EXT_SUFFIX')}"))
        if not made:
            sys.stderr.write("compile: mypyc made no extension module\n")
            return 1
        for old in package.glob(f"{MODULE}*"):
            old.unlink()
        for ext in made:
            shutil.copy(ext, package / ext.name)
    (package / f"{MODULE}.sha256").write_text(digest + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
