"""Sub-commands of ``worker``; see :mod:`worker.cli`.

One rule for the configuration, shared by every sub-command: ``--config FILE``
(accepted before or after the sub-command and its action), else the file named
by ``$WORKER_CONFIG``, else none: defaults plus ``WORKER__*`` variables.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

CONFIG_ENV = "WORKER_CONFIG"
CONFIG_HELP = f"TOML configuration file (default: ${CONFIG_ENV}; none: WORKER__SECTION__KEY variables alone)"


def add_parser(sub: Any, name: str, summary: str | None, description: str, examples: str = "") -> Any:
    """A sub-command parser with plain-text help; ``summary=None`` hides it from ``worker --help``."""
    kwargs: dict[str, Any] = {
        "description": description,
        "formatter_class": argparse.RawDescriptionHelpFormatter,
    }
    if examples:
        kwargs["epilog"] = "examples:\n" + examples
    if summary is not None:
        kwargs["help"] = summary
    p = sub.add_parser(name, **kwargs)
    add_config_option(p)
    return p


def add_config_option(p: argparse.ArgumentParser) -> None:
    """``--config`` on this (sub-)parser; unset here, it keeps what an outer parser got."""
    p.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help=CONFIG_HELP)


def config_path(args: argparse.Namespace) -> str | None:
    return getattr(args, "config", None) or os.environ.get(CONFIG_ENV) or None


def load_config(args: argparse.Namespace, *, runtime: bool = False, configure_log: bool = True) -> Any:
    """The configuration by the one rule; ``runtime``: also require region, table and application name."""
    from worker import config, log

    cfg = config.load(config_path(args))
    if configure_log:
        log.configure(cfg.worker.log_format, cfg.worker.log_level)
    if runtime:
        config.require_runtime(cfg)
    return cfg
