"""Fixtures for engine tests: a local datasets root and a remote base dir behind a transport.

`sides` and `fm` are parametrized over the transports the engine must treat alike: `local` (a
directory on this machine) and ssh over both backends, `openssh` and `paramiko` (the private sshd
of tests/conftest.py, to a base dir on this machine whose path has a space, so quoting is proven
end to end). Each scenario is written once and runs on all three; `-m "not sshd"` runs the local
side only.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sides import FileSides, Sides

from usrbatch import auditlog
from usrbatch.remotes import RemoteConfig
from usrbatch.transport.factory import open_transport
from usrbatch.transport.local import LocalTransport

SIDES = ["local", *(pytest.param(backend, marks=pytest.mark.sshd) for backend in ("openssh", "paramiko"))]


def _ssh_server(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """The private sshd, with the SSH backend of this parameter chosen for open_transport."""
    request.getfixturevalue("control_dir")  # private ControlMaster sockets, ended afterwards
    monkeypatch.setenv("USRBATCH_SSH_TRANSPORT", request.param)
    return request.getfixturevalue("sshd_server")


@pytest.fixture(autouse=True)
def _private_hash_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the agent's hash cache out of the real home directory."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))


@pytest.fixture(autouse=True)
def _audit_log_to_file(tmp_path: Path) -> Iterator[Path]:
    """structlog events go to a JSON-lines file (as in production), never to stdout."""
    path = tmp_path / "audit.jsonl"
    auditlog.configure(path)
    yield path
    auditlog.configure(None)


@pytest.fixture(params=SIDES)
def sides(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sides]:
    local_root = tmp_path / "local"
    local_root.mkdir()
    if request.param == "local":
        remote_root = tmp_path / "remote"
        remote_root.mkdir()
        yield Sides(local_root, remote_root, LocalTransport(remote_root))
        return
    server = _ssh_server(request, monkeypatch)
    remote_root = tmp_path / "remote base"  # a space: paths must be quoted end to end
    remote_root.mkdir()
    remote = RemoteConfig(
        name="hpc", type="ssh", host=server.alias, user=server.user, base_dir=str(remote_root)
    )
    transport = open_transport(remote, ssh_config_path=server.ssh_config, retries=2, backoff=0.1)
    try:
        yield Sides(local_root, remote_root, transport, request.param)
    finally:
        transport.close()


@pytest.fixture(params=SIDES)
def fm(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FileSides:
    """FILE mode: a local repo and a remote repo (repo_root) behind a `local` or `ssh` remote."""
    local_repo, remote_repo = tmp_path / "local repo", tmp_path / "remote repo"
    local_repo.mkdir()
    remote_repo.mkdir()
    roots = {
        "base_dir": str(tmp_path / "usr_datasets"),
        "repo_root": str(remote_repo),
        "local_repo_root": str(local_repo),
    }
    if request.param == "local":
        return FileSides(
            local_repo, remote_repo, RemoteConfig(name="hpc", type="local", **roots), open_transport
        )
    server = _ssh_server(request, monkeypatch)
    remote = RemoteConfig(name="hpc", type="ssh", host=server.alias, user=server.user, **roots)

    def open_ssh(config: RemoteConfig):
        return open_transport(config, ssh_config_path=server.ssh_config, retries=2, backoff=0.1)

    return FileSides(local_repo, remote_repo, remote, open_ssh, request.param)
