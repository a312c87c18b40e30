"""ssh_connect.authenticate against an in-process paramiko SSH server (the real protocol).

What the server asks for decides what the client tries: a key accepted as the first of two
factors ends the key phase, a server without publickey ends it at once, and batch mode never
prompts but says which factor is missing. The prompting paths (keyboard-interactive, password on
a terminal) run against a real sshd through PAM in tests/integration/test_ssh_interactive_auth.py.
"""

from __future__ import annotations

import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from usrbatch.errors import RemoteUnavailableError
from usrbatch.transport.ssh_config import SshEndpoint
from usrbatch.transport.ssh_connect import authenticate


class Server(paramiko.ServerInterface):
    """Accepts `good_key` (fully, or as a first factor when `methods` continue after it)."""

    def __init__(self, methods: list[str], good_key: paramiko.PKey) -> None:
        self.methods = methods  # e.g. ["publickey", "keyboard-interactive"] = both required
        self.good_key = good_key
        self.offered: list[str] = []  # publickey fingerprints the client presented, in order

    def get_allowed_auths(self, username: str) -> str:
        return ",".join(self.methods)

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        self.offered.append(key.fingerprint)
        if "publickey" not in self.methods or key.fingerprint != self.good_key.fingerprint:
            return paramiko.AUTH_FAILED
        if len(self.methods) > 1:
            self.methods = self.methods[1:]
            return paramiko.AUTH_PARTIALLY_SUCCESSFUL
        return paramiko.AUTH_SUCCESSFUL


def _keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True, timeout=30)
    return path


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return _keygen(tmp_path / "first"), _keygen(tmp_path / "second")


@pytest.fixture
def connect() -> Iterator:
    opened: list[paramiko.Transport] = []

    def _connect(server: Server) -> paramiko.Transport:
        a, b = socket.socketpair()
        srv = paramiko.Transport(b)
        srv.add_server_key(paramiko.ECDSAKey.generate())
        opened.append(srv)
        started = threading.Event()
        srv.start_server(event=started, server=server)
        client = paramiko.Transport(a)
        opened.append(client)
        client.start_client(timeout=10)
        return client

    yield _connect
    for t in opened:
        t.close()


def _endpoint(*identity_files: Path) -> SshEndpoint:
    return SshEndpoint(
        alias="cluster",
        hostname="127.0.0.1",
        port=22,
        user="alice",
        identity_files=identity_files,
        identities_only=True,
        known_hosts_files=(),
    )


def test_key_accepted_as_first_factor_stops_the_key_phase(connect, keys) -> None:
    first, second = keys
    server = Server(["publickey", "keyboard-interactive"], paramiko.PKey.from_path(str(second)))
    t = connect(server)
    with pytest.raises(RemoteUnavailableError) as err:
        authenticate(t, _endpoint(second, first), batch_mode=True)
    assert str(err.value) == (
        f"SSH authentication failed for alice@cluster (tried: {second}; "
        f"{second} was accepted but the server also requires: keyboard-interactive)."
    )
    assert "set batch_mode: false and run from a terminal" in (err.value.hint or "")
    assert len(server.offered) == 1  # `first` was never presented after the partial success


def test_server_without_publickey_ends_the_key_phase(connect, keys) -> None:
    first, second = keys
    server = Server(["password"], paramiko.PKey.from_path(str(second)))
    t = connect(server)
    with pytest.raises(RemoteUnavailableError) as err:
        authenticate(t, _endpoint(first, second), batch_mode=True)
    assert str(err.value) == f"SSH authentication failed for alice@cluster (tried: {first})."
    assert len(server.offered) == 1  # the failure listed only "password": `second` never sent


def test_plain_key_login_is_unchanged(connect, keys) -> None:
    first, second = keys
    server = Server(["publickey"], paramiko.PKey.from_path(str(second)))
    t = connect(server)
    assert authenticate(t, _endpoint(first, second), batch_mode=True) == str(second)
    assert t.is_authenticated() and len(server.offered) == 2
