"""Sub-commands of ``worker``; see :mod:`worker.cli`."""
