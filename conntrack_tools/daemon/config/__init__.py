"""conntrackd.conf configuration layer (sans-I/O apart from :func:`load_config`).

``parse_config(text, filename)`` turns text into an immutable :class:`Config`
with the C 1.4.7 defaults applied, raising :class:`ConfigError` for anything
conntrackd 1.4.7 would refuse to parse; ``check_config(config)`` adds the
cross-field findings of ``conntrackd --config-test``.
"""

from __future__ import annotations

import os

from .checks import HostFacts, check_config
from .model import (
    Channel,
    Config,
    ConfigError,
    Filter,
    Finding,
    General,
    Helper,
    Scheduler,
    Stats,
    Sync,
    SyncMode,
    Transport,
)
from .parser import parse_config

__all__ = [
    "Channel",
    "Config",
    "ConfigError",
    "Filter",
    "Finding",
    "General",
    "Helper",
    "HostFacts",
    "Scheduler",
    "Stats",
    "Sync",
    "SyncMode",
    "Transport",
    "check_config",
    "load_config",
    "parse_config",
]


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and parse a config file; an unreadable file is a ConfigError too.

    Bytes that are not UTF-8 are kept via surrogateescape (C reads bytes), so
    they round-trip into path names exactly.
    """
    name = os.fspath(path)
    try:
        with open(name, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ConfigError(name, 0, 0, f"can't open config file: {exc.strerror or exc}") from None
    return parse_config(data.decode("utf-8", "surrogateescape"), name)
