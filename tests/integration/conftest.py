"""Session fixtures for tests against real services: a private sshd, SGE and Slurm.

Locally a missing service skips its tests; with CI=true it fails them (see require_service).
`sshd_server`, `ssh_backend` and `control_dir` live in tests/conftest.py: the ssh sides of the sync
scenarios in tests/sync use them too.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import pytest

try:  # tests/integration as a package (tests/__init__.py present) ...
    from .services import (
        require_service,
        sge_available,
        slurm_available,
    )
except ImportError:  # ... or as a plain directory on sys.path (pytest's default "prepend" mode)
    from services import (  # type: ignore[no-redef]
        require_service,
        sge_available,
        slurm_available,
    )


@dataclass(frozen=True)
class SchedulerHost:
    """The single-node scheduler the tests submit to."""

    scheduler: str  # "sge" or "slurm"
    hostname: str  # this machine's hostname, as the scheduler knows it


@pytest.fixture(autouse=True)
def _paramiko_unless_parametrized(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests that do not ask for `ssh_backend` were written for (and stay on) paramiko."""
    monkeypatch.setenv("USRBATCH_SSH_TRANSPORT", "paramiko")


@pytest.fixture(scope="session")
def sge() -> SchedulerHost:
    """Son of Grid Engine started by scripts/sge-up (qsub/qstat/qacct on PATH)."""
    require_service("sge", sge_available(), "qsub not on PATH or qstat does not answer within 10 s")
    return SchedulerHost(scheduler="sge", hostname=socket.gethostname())


@pytest.fixture(scope="session")
def slurm() -> SchedulerHost:
    """Slurm started by scripts/slurm-up (sbatch/squeue/sacct -c on PATH, one idle node)."""
    require_service(
        "slurm", slurm_available(), "sbatch not on PATH or sinfo shows no usable node within 10 s"
    )
    return SchedulerHost(scheduler="slurm", hostname=socket.gethostname())


@pytest.fixture
def bytecode_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Jobs start fresh `python -m usrbatch...` interpreters: with PYTHONDONTWRITEBYTECODE set each
    would compile every module it imports, so give them one pycache under the session's temp dir.
    Modules whose jobs run usrbatch take it with `pytestmark = pytest.mark.usefixtures(...)`."""
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        monkeypatch.delenv("PYTHONDONTWRITEBYTECODE")
        monkeypatch.setenv("PYTHONPYCACHEPREFIX", str(tmp_path_factory.getbasetemp() / "pycache"))
