"""Fixtures for engine tests: a local datasets root and a remote base dir behind a transport."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

# `builders` (the dataset builders) sits beside this file; pytest runs with --import-mode=importlib.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from usrbatch import auditlog  # noqa: E402
from usrbatch.transport.local import LocalTransport  # noqa: E402


@pytest.fixture(autouse=True)
def _private_hash_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the agent's hash cache out of the real home directory."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))


@pytest.fixture(autouse=True)
def _audit_log_to_file(tmp_path: Path) -> Path:
    """structlog events go to a JSON-lines file (as in production), never to stdout."""
    path = tmp_path / "audit.jsonl"
    auditlog.configure(path)
    yield path
    auditlog.configure(None)


@dataclass
class Sides:
    local_root: Path
    remote_root: Path
    transport: LocalTransport


@pytest.fixture
def sides(tmp_path: Path) -> Sides:
    local_root = tmp_path / "local"
    remote_root = tmp_path / "remote"
    local_root.mkdir()
    remote_root.mkdir()
    return Sides(local_root, remote_root, LocalTransport(remote_root))
