"""Session fixtures for tests against real services: a private sshd, SGE and Slurm.

Locally a missing service skips its tests; with CI=true it fails them (see require_service).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

try:  # tests/integration as a package (tests/__init__.py present) ...
    from .services import (
        SSHD,
        SshdServer,
        require_service,
        sge_available,
        slurm_available,
        start_sshd,
        stop_sshd,
    )
except ImportError:  # ... or as a plain directory on sys.path (pytest's default "prepend" mode)
    from services import (  # type: ignore[no-redef]
        SSHD,
        SshdServer,
        require_service,
        sge_available,
        slurm_available,
        start_sshd,
        stop_sshd,
    )


@dataclass(frozen=True)
class SchedulerHost:
    """The single-node scheduler the tests submit to."""

    scheduler: str  # "sge" or "slurm"
    hostname: str  # this machine's hostname, as the scheduler knows it


@pytest.fixture(scope="session")
def sshd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshdServer]:
    """A private sshd on 127.0.0.1 (random port, fresh keys), stopped at session end."""
    require_service("sshd", os.access(SSHD, os.X_OK), f"{SSHD} is not installed")
    server, proc = start_sshd(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        stop_sshd(proc)


SSH_BACKENDS = ("openssh", "paramiko")


def close_masters(control_dir: Path) -> None:
    """End every ControlMaster whose socket is in `control_dir` (`ssh -O exit`), so none outlives a test."""
    for sock in control_dir.glob("cm-*"):
        if sock.is_socket():
            subprocess.run(
                ["ssh", "-S", str(sock), "-O", "exit", "usrtest"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=10,
            )


@pytest.fixture
def control_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private ControlPath dir for this test (short, under /tmp: socket paths are limited);
    every master in it is ended afterwards."""
    path = Path(tempfile.mkdtemp(prefix="usr-cm-", dir="/tmp"))
    monkeypatch.setenv("USRBATCH_CONTROL_DIR", str(path))
    try:
        yield path
    finally:
        close_masters(path)
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(autouse=True)
def _paramiko_unless_parametrized(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests that do not ask for `ssh_backend` were written for (and stay on) paramiko."""
    monkeypatch.setenv("USRBATCH_SSH_TRANSPORT", "paramiko")


@pytest.fixture(params=SSH_BACKENDS)
def ssh_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, control_dir: Path) -> str:
    """Run the test once per SSH backend: the factory's default ($USRBATCH_SSH_TRANSPORT) is set,
    so open_transport and the `usr` CLI (in-process or child) pick it."""
    monkeypatch.setenv("USRBATCH_SSH_TRANSPORT", request.param)
    return request.param


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
