"""ssh_connect: TCP_NODELAY on the socket, GCM ciphers preferred only when paramiko has them."""

from __future__ import annotations

import socket

import paramiko
import pytest

from usrbatch.transport import ssh_connect


def test_tcp_connect_sets_nodelay() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        sock = ssh_connect.tcp_connect("127.0.0.1", port, 5.0)
        try:
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        finally:
            sock.close()


def _options() -> tuple[paramiko.Transport, paramiko.transport.SecurityOptions]:
    a, _b = socket.socketpair()
    t = paramiko.Transport(a)
    return t, t.get_security_options()


def test_gcm_ciphers_go_first_and_nothing_is_dropped() -> None:
    t, opts = _options()
    try:
        before = list(opts.ciphers)
        ssh_connect.prefer_fast_ciphers(opts)
        after = list(opts.ciphers)
        assert sorted(after) == sorted(before)  # servers without GCM still find a common cipher
        have = [c for c in ssh_connect.FAST_CIPHERS if c in before]
        assert after[: len(have)] == have
    finally:
        t.close()


def test_ciphers_unchanged_when_paramiko_lacks_gcm(monkeypatch: pytest.MonkeyPatch) -> None:
    t, opts = _options()
    try:
        info = {k: v for k, v in paramiko.Transport._cipher_info.items() if "gcm" not in k}
        monkeypatch.setattr(paramiko.Transport, "_cipher_info", info)
        before = list(opts.ciphers)
        ssh_connect.prefer_fast_ciphers(opts)
        assert list(opts.ciphers) == before
    finally:
        t.close()
