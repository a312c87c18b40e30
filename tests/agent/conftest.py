"""The oldest Python the agent claims (3.6, see usrbatch/agent/remote.py), for the tests that run
the agent's real ops under it. The machine image ships it through pyenv; in CI its absence is a
failure (a silent fallback would stop proving the claim), elsewhere a skip that says why."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

OLDEST_AGENT_PYTHON = "3.6"


@pytest.fixture(autouse=True)
def _private_cache_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Agents started by these tests (in-process or a child python3) keep their hash caches and
    compiled copies in a temp dir, not in the user's ~/.cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))


@pytest.fixture(scope="session")
def agent_python_36() -> str:
    olds = sorted((Path.home() / ".pyenv" / "versions").glob(f"{OLDEST_AGENT_PYTHON}.*/bin/python3"))
    if olds:
        return str(olds[0])
    why = (
        f"no Python {OLDEST_AGENT_PYTHON} under ~/.pyenv/versions: the agent's oldest claimed "
        f"interpreter (install it with `pyenv install {OLDEST_AGENT_PYTHON}`)"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(why)
    pytest.skip(why)
