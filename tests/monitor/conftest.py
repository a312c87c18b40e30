"""Fixtures for monitor tests: real HTTP/SMTP receivers and a private watch config writer."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from receivers import HttpReceiver, SmtpReceiver, running_http_receiver, start_smtp_receiver  # noqa: E402


@pytest.fixture(autouse=True)
def _bytecode_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        monkeypatch.delenv("PYTHONDONTWRITEBYTECODE")
        monkeypatch.setenv("PYTHONPYCACHEPREFIX", str(tmp_path_factory.getbasetemp() / "pycache"))


@pytest.fixture
def http_receiver() -> Iterator[HttpReceiver]:
    with running_http_receiver() as rec:
        yield rec


@pytest.fixture
def smtp_receiver(tmp_path: Path) -> Iterator[SmtpReceiver]:
    rec, controller = start_smtp_receiver(tmp_path, username="alice", password="s3cret-Smtp-pw9")
    try:
        yield rec
    finally:
        controller.stop()


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[dict], Path]:
    """write_config(data) -> a 0600 watch config under tmp_path."""

    def _write(data: dict, name: str = "watch.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        path.chmod(0o600)
        return path

    return _write
