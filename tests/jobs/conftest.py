"""Helpers for job-plane tests: write a loop spec into a temp dir."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml


@pytest.fixture(autouse=True)
def _bytecode_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # Job processes start Python several times each; without a bytecode cache (this machine sets
    # PYTHONDONTWRITEBYTECODE) every start recompiles pyarrow. Cache outside the package.
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        monkeypatch.delenv("PYTHONDONTWRITEBYTECODE")
        monkeypatch.setenv("PYTHONPYCACHEPREFIX", str(tmp_path_factory.getbasetemp() / "pycache"))


@pytest.fixture
def write_spec(tmp_path: Path) -> Callable[..., Path]:
    """write_spec(file_name="loop", **keys) -> path of a loop spec with a datasets root under tmp_path."""

    def _write(file_name: str = "loop", **keys: object) -> Path:
        data: dict = {"dataset": "demo", "root": str(tmp_path / "root")}
        data.update(keys)
        path = tmp_path / f"{file_name}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        return path

    return _write
