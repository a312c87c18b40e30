"""Adapters that let paramiko-shaped code drive an `ssh` subprocess.

PipeSocket: the socket paramiko's SFTPClient reads and writes (the subprocess's stdout/stdin).
ProcessChannel: the channel ssh_lease.py holds a lease on (exec, send, timed recv, exit status).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import subprocess
from collections.abc import Callable

PIPE_SIZE = 1024 * 1024  # F_SETPIPE_SZ: fewer wake-ups per MiB than the 64 KiB default
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


def _grow_pipe(fd: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_SIZE)


def _end(proc: subprocess.Popen, wait: float = 2.0) -> None:
    """Close stdin (EOF ends the remote side cleanly), then wait, then terminate."""
    if proc.stdin is not None:
        with contextlib.suppress(OSError):
            proc.stdin.close()
    try:
        proc.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        with contextlib.suppress(OSError):
            proc.stdout.close()


class PipeSocket:
    """send/recv over a subprocess's stdin/stdout (what paramiko.SFTPClient needs of a socket)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        self.proc = proc
        self._in = proc.stdin.fileno()
        self._out = proc.stdout.fileno()
        _grow_pipe(self._in)
        _grow_pipe(self._out)
        self._timeout: float | None = None
        self.closed = False

    def send(self, data: bytes) -> int:
        try:
            return os.write(self._in, data)
        except (BrokenPipeError, ValueError) as exc:
            raise EOFError("ssh sftp session closed") from exc

    def recv(self, size: int) -> bytes:
        if self._timeout is not None:
            ready, _w, _x = select.select([self._out], [], [], self._timeout)
            if not ready:
                raise TimeoutError()
        try:
            return os.read(self._out, size)
        except (OSError, ValueError):
            return b""  # EOF for paramiko

    def recv_ready(self) -> bool:
        ready, _w, _x = select.select([self._out], [], [], 0)
        return bool(ready)

    def settimeout(self, timeout: float | None) -> None:
        self._timeout = timeout

    def gettimeout(self) -> float | None:
        return self._timeout

    def get_name(self) -> str:
        return "openssh-sftp"

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            _end(self.proc)


class _ProcessActive:
    def __init__(self, channel: ProcessChannel) -> None:
        self.channel = channel

    def is_active(self) -> bool:
        proc = self.channel.proc
        return proc is not None and proc.poll() is None


class ProcessChannel:
    """One `ssh ... HOST command` process shaped like the paramiko Channel ssh_lease.py uses."""

    def __init__(self, argv_for: Callable[[str], list[str]]) -> None:
        self._argv_for = argv_for
        self.proc: subprocess.Popen | None = None
        self._timeout: float | None = None
        self.closed = False
        self.eof_received = False

    def exec_command(self, command: str) -> None:
        self.proc = subprocess.Popen(
            self._argv_for(command),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # remote stderr is never read into a message (ssh_lease.py)
            bufsize=0,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        _grow_pipe(self.proc.stdin.fileno())  # file streams (ssh_stream.py) move MiBs through these
        _grow_pipe(self.proc.stdout.fileno())

    def _proc(self) -> subprocess.Popen:
        if self.proc is None:
            raise EOFError("session not started")
        return self.proc

    def sendall(self, data: bytes) -> None:
        stdin = self._proc().stdin
        assert stdin is not None
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(stdin.fileno(), view) :]
        except (BrokenPipeError, ValueError) as exc:
            raise EOFError("ssh session closed") from exc

    def shutdown_write(self) -> None:
        stdin = self._proc().stdin
        if stdin is not None:
            with contextlib.suppress(OSError):
                stdin.close()

    def settimeout(self, timeout: float | None) -> None:
        self._timeout = timeout

    def recv(self, size: int) -> bytes:
        stdout = self._proc().stdout
        assert stdout is not None
        if self._timeout is not None:
            ready, _w, _x = select.select([stdout], [], [], self._timeout)
            if not ready:
                raise TimeoutError()
        data = os.read(stdout.fileno(), size)
        if not data:
            self.eof_received = True
        return data

    def exit_status_ready(self) -> bool:
        return self._proc().poll() is not None

    def recv_exit_status(self) -> int:
        return self._proc().wait()

    def get_transport(self) -> _ProcessActive:
        return _ProcessActive(self)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.proc is not None:
                _end(self.proc, wait=5.0)
