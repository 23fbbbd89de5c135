"""worker: DynamoDB Streams change processing with an exactly-once effect per sink."""

__version__ = "0.1.0"


def version() -> str:
    """The installed distribution's version (``__version__`` when run from a source tree)."""
    try:
        from importlib.metadata import version as dist_version

        return dist_version("worker")
    except Exception:
        return __version__
