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
