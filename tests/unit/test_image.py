"""The container image's recipe, read (no Docker engine here): what can be checked without building it."""

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def pins() -> dict[str, str]:
    out = {}
    for line in (ROOT / ".ci" / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            out[name.lower().replace("_", "-")] = version
    return out


def test_image_python_is_the_tests_minor_version():
    image = re.search(r"ARG PYTHON_IMAGE=python:(\d+\.\d+)-", DOCKERFILE)
    assert image is not None
    assert image.group(1) == PYPROJECT["tool"]["mypy"]["python_version"]


def test_constraints_pin_every_runtime_dependency_within_its_range():
    pinned = pins()
    for spec in PYPROJECT["project"]["dependencies"]:
        req = Requirement(spec)
        name = req.name.lower().replace("_", "-")
        if name == "amazon-kclpy":  # installed from its sdist by .ci/dev (editable: not in the freeze)
            continue
        assert name in pinned, f"{name} has no pin in .ci/constraints.txt (bash .ci/dev lock)"
        assert req.specifier.contains(pinned[name]), f"{name}=={pinned[name]} is outside {req.specifier}"


def test_dependencies_are_installed_before_the_code_is_copied():
    deps = DOCKERFILE.index("pip install -c .ci/constraints.txt")
    assert DOCKERFILE.index("COPY .ci/constraints.txt") < deps < DOCKERFILE.index("COPY worker ./worker")


def test_tini_is_pid_1_and_the_image_is_labelled():
    assert 'ENTRYPOINT ["/usr/bin/tini", "--", "worker", "daemon"]' in DOCKERFILE
    for label in ("title", "description", "licenses", "version", "revision"):
        assert f"org.opencontainers.image.{label}=" in DOCKERFILE
    assert (ROOT / "LICENSE").read_text().lstrip().startswith("Apache License")


def test_one_port_setting():
    assert "WORKER_HTTP_PORT" not in DOCKERFILE
    assert "WORKER__KCL__HTTP_PORT" in DOCKERFILE


def test_every_module_a_shard_process_imports_is_byte_compiled_in_the_image():
    """PYTHONDONTWRITEBYTECODE is set at run time: what is not compiled at build is compiled by every
    shard process at its start. pip compiles what it installs, except editable installs (amazon-kclpy);
    the base image deletes its standard library's .pyc files, so the runtime stage compiles them."""
    assert "PYTHONDONTWRITEBYTECODE=1" in DOCKERFILE
    runtime = DOCKERFILE.index("FROM ${PYTHON_IMAGE}\n")
    stdlib = DOCKERFILE.index(
        "RUN python -m compileall -q -x '/(test|tests|idle_test|site-packages)/' \"$(python -c 'import sysconfig"
    )
    assert runtime < stdlib < DOCKERFILE.index("USER 10001:10001")
    editable = DOCKERFILE.index('pip install -e "/opt/venv/src/amazon_kclpy-${KCLPY_VERSION}"')
    compiled = DOCKERFILE.index('python -m compileall -q "/opt/venv/src/amazon_kclpy-${KCLPY_VERSION}/amazon_kclpy"')
    assert editable < compiled < DOCKERFILE.index("FROM ${JRE_IMAGE} AS jre")
    assert "--no-compile" not in DOCKERFILE
    assert "pip install --no-deps -c .ci/constraints.txt ." in DOCKERFILE  # not editable: compiled by pip


def test_the_image_builds_the_compiled_decoders_into_the_installed_package():
    """The runtime stage copies /opt/venv: the extension modules must be built there, from the
    installed package (not /src/worker), by the same script as .ci/dev setup, and be in use."""
    install = DOCKERFILE.index("pip install --no-deps -c .ci/constraints.txt .")
    build = DOCKERFILE.index("python /src/.ci/compile.py")
    assert install < build < DOCKERFILE.index("FROM ${JRE_IMAGE} AS jre")
    assert DOCKERFILE.index(" && cd / ") < build  # `import worker` must not find /src/worker
    assert "--mypyc /opt/mypyc/bin/mypyc" in DOCKERFILE
    assert "assert c.ACTIVE" in DOCKERFILE[build:]
    assert "gcc" in DOCKERFILE[install:build]
    assert "mypy" in pins()  # the throw-away mypyc environment is pinned like the rest
