"""The S3 change archive's format: written by :mod:`worker.sinks.archive`, read by replays."""

from worker.archive.reader import *  # noqa: F403
