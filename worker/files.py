"""Local files written whole or not at all."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["write_atomic"]


def write_atomic(path: str | os.PathLike[str], data: bytes, *, durable: bool = True) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old file or the new one, never a torn one.

    The bytes go to a hidden temporary file beside ``path`` (``.<name>.tmp``),
    then replace ``path`` in one rename. With ``durable`` (the default) the
    file is fsync'ed before the rename, so the new content survives a machine
    crash once this returns; ``durable=False`` is for snapshots that are
    rewritten constantly and may be lost (metrics). Missing directories are
    created. Raises ``OSError``.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        if durable:
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, target)
