"""The two ends of a sync scenario, as the `sides` (dataset mode) and `fm` (FILE mode) fixtures of
conftest.py hand them to a test; importable by name for type hints and for other test dirs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from usrbatch.remotes import RemoteConfig


@dataclass
class Sides:
    """A local datasets root, the remote base dir on this machine, and the transport to it."""

    local_root: Path
    remote_root: Path
    transport: Any  # LocalTransport or SshTransport: the engine must not care
    side: str = "local"


@dataclass
class FileSides:
    """A local repo and its remote twin, a remote config pointing at both, and how to open it."""

    local_repo: Path
    remote_repo: Path
    remote: RemoteConfig
    open: Callable[[RemoteConfig], Any]
    side: str = "local"
