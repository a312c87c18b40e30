"""ssh_lease._release over a channel shaped like openssh_channel.ProcessChannel, whose "transport"
is inactive exactly when the `ssh` process has exited (the real lease runs in tests/integration)."""

from __future__ import annotations

from usrbatch.transport import ssh_lease


class ExitingChannel:
    """A holder whose `ssh` process exits just as the release loop looks at the session: the
    exit-status check said "running", then the process ends before the liveness check."""

    def __init__(self, code: int | None, *, leaves_status: bool = True) -> None:
        self.code, self.leaves_status = code, leaves_status
        self.exited = False
        self.liveness_checks = 0
        self.sent = b""
        self.closed = False

    def exit_status_ready(self) -> bool:
        return self.exited and self.leaves_status

    def get_transport(self) -> ExitingChannel:
        return self

    def is_active(self) -> bool:
        self.liveness_checks += 1
        if self.liveness_checks == 1:  # _release's entry check: the holder is still running
            return True
        self.exited = True  # then it ends between the loop's exit-status and liveness checks
        return False

    def sendall(self, data: bytes) -> None:
        self.sent += data

    def shutdown_write(self) -> None:
        pass

    def recv_exit_status(self) -> int | None:
        return self.code

    def close(self) -> None:
        self.closed = True


def test_a_holder_that_exits_between_the_checks_is_released_not_lost() -> None:
    chan = ExitingChannel(0)
    assert ssh_lease._release(chan) == 0  # type: ignore[arg-type]
    assert chan.sent == b"release\n" and chan.closed


def test_a_holder_that_exits_with_an_error_reports_its_code() -> None:
    assert ssh_lease._release(ExitingChannel(3)) == 3  # type: ignore[arg-type]


def test_a_session_gone_without_an_exit_status_is_lost() -> None:
    chan = ExitingChannel(None, leaves_status=False)  # a dead paramiko connection: no status comes
    assert ssh_lease._release(chan) is None  # type: ignore[arg-type]
    assert chan.closed
