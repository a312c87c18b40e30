"""Fixtures shared by more than one test directory.

`sshd_server` is the private sshd the integration tests use, `ssh_backend` runs a test once per
SSH backend (openssh, paramiko) and `control_dir` gives it private ControlMaster sockets. The
sync scenarios in tests/sync use them too, for the ssh sides of their `sides` and `fm` fixtures
(parametrized over local and both ssh backends, so one test function proves every transport).
Run only the local side with `-m "not sshd"`. `tree` snapshots a directory for "nothing changed"
assertions (the dataset and CLI tests).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from services import SSHD, SshdServer, require_service, start_sshd, stop_sshd


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


@pytest.fixture(params=SSH_BACKENDS)
def ssh_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, control_dir: Path) -> str:
    """Run the test once per SSH backend: the factory's default ($USRBATCH_SSH_TRANSPORT) is set,
    so open_transport and the `usr` CLI (in-process or child) pick it."""
    monkeypatch.setenv("USRBATCH_SSH_TRANSPORT", request.param)
    return request.param


def tree_state(root: Path) -> dict[str, bytes | str]:
    """Every path under root (files: bytes, dirs/links: a marker), dotfiles and locks included."""
    state: dict[str, bytes | str] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs:
            state[os.path.relpath(os.path.join(dirpath, name), root)] = "<dir>"
        for name in files:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            state[rel] = "<link>" if os.path.islink(full) else Path(full).read_bytes()
    return state


@pytest.fixture
def tree():
    """`tree(root)` -> every path and file's bytes under root, for 'nothing changed' assertions."""
    return tree_state
