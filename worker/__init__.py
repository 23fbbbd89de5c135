"""worker: DynamoDB Streams change processing with an exactly-once effect per sink."""

from pathlib import Path as _Path

from worker.compiled import guard as _guard

__version__ = "0.1.0"

_guard(_Path(__file__).parent)  # before any compiled module is imported: see worker.compiled


def version() -> str:
    """The installed distribution's version (``__version__`` when run from a source tree)."""
    try:
        from importlib.metadata import version as dist_version

        return dist_version("worker")
    except Exception:
        return __version__
