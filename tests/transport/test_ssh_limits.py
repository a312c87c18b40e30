"""sftp_request_sizes: the server's declared SFTP limits, and the fallback when it declares none."""

from __future__ import annotations

import paramiko
from paramiko.message import Message
from paramiko.sftp import CMD_EXTENDED_REPLY

from usrbatch.transport.ssh import SFTP_DEFAULT_REQUEST, SFTP_MAX_REQUEST, sftp_request_sizes


class _Server:
    """Stands in for an SFTPClient's request/reply (the real-sshd case is an integration test)."""

    def __init__(self, reply: tuple[int, Message] | Exception) -> None:
        self.reply = reply

    def _request(self, *_args: object) -> tuple[int, Message]:
        if isinstance(self.reply, Exception):
            raise self.reply
        return self.reply


def _limits(packet: int, read: int, write: int) -> tuple[int, Message]:
    msg = Message()
    for value in (packet, read, write, 64):
        msg.add_int64(value)
    return CMD_EXTENDED_REPLY, Message(msg.asbytes())


def test_declared_limits_are_used_and_capped() -> None:
    assert sftp_request_sizes(_Server(_limits(262144, 65536, 131072))) == (65536, 131072)  # type: ignore[arg-type]
    assert sftp_request_sizes(_Server(_limits(1 << 24, 1 << 22, 1 << 22))) == (SFTP_MAX_REQUEST,) * 2  # type: ignore[arg-type]
    assert sftp_request_sizes(_Server(_limits(262144, 0, 0))) == (SFTP_DEFAULT_REQUEST,) * 2  # type: ignore[arg-type]


def test_servers_without_the_extension_get_paramikos_default() -> None:
    for failure in (OSError("Operation unsupported"), paramiko.SSHException("dropped"), EOFError()):
        assert sftp_request_sizes(_Server(failure)) == (SFTP_DEFAULT_REQUEST,) * 2  # type: ignore[arg-type]


def test_env_knob_caps_the_request_size(monkeypatch) -> None:
    monkeypatch.setenv("USRBATCH_SFTP_REQUEST_MAX", "32768")
    assert sftp_request_sizes(_Server(_limits(262144, 261120, 261120))) == (32768, 32768)  # type: ignore[arg-type]
