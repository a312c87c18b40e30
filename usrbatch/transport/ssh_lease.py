"""The remote dataset lease over SSH: the agent's `lease` op on its own exec channel.

Handshake (contract §8.5): read stdout lines until the exact `USR_REMOTE_LOCK_ACQUIRED:<token>`
or `..._TIMEOUT:<token>` marker, EOF, or a local deadline of timeout + 15 s. Other lines are
noise: counted, never shown; remote stderr is never read into a message. On failure the channel
is closed first. Release: `release\\n`, close stdin, wait up to 5 s for the exit status. When the
SSH connection dies the agent sees EOF on stdin and releases: the lock dies with the connection.
A lease asked for the dataset's inventory reads it from the one JSON line after the marker (taken
under the lock, so a sync re-observes the locked remote without another round trip).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from usrbatch.agent import client
from usrbatch.agent.remote import EVENT_LOCK_TIMEOUT, LOCK_ACQUIRED, LOCK_TIMEOUT
from usrbatch.errors import TransferError
from usrbatch.transport.base import Inventory
from usrbatch.transport.paramiko_lazy import paramiko_errors
from usrbatch.transport.ssh_shell import NO_PYTHON_MARK

if TYPE_CHECKING:
    import paramiko

HANDSHAKE_SLACK_S = 15.0
RELEASE_WAIT_S = 15.0  # the holder's release + exit; a loaded host can take seconds


@dataclass
class SshLease:
    """A held remote dataset lock; alive while its exec channel and connection are."""

    token: str
    channel: paramiko.Channel
    inventory: Inventory | None = None  # the dataset under the lock, when the lease asked for it

    def alive(self) -> bool:
        transport = self.channel.get_transport()
        return (
            not self.channel.closed
            and not self.channel.exit_status_ready()
            and not self.channel.eof_received
            and transport is not None
            and transport.is_active()
        )


@dataclass(frozen=True)
class Handshake:
    outcome: str  # acquired | timeout | event-timeout | eof | deadline | agent-error | no-python
    noise: int
    detail: str | None = None
    rest: bytes = b""  # what arrived after the marker line


def read_handshake(chan: paramiko.Channel, token: str, deadline: float) -> Handshake:
    """Consume stdout lines until a marker bearing `token`, EOF or the deadline."""
    wanted = {
        LOCK_ACQUIRED + token: "acquired",
        LOCK_TIMEOUT + token: "timeout",
        EVENT_LOCK_TIMEOUT + token: "event-timeout",
    }
    buf = b""
    noise = 0
    while True:
        while b"\n" in buf:
            raw, buf = buf.split(b"\n", 1)
            line = raw.decode("utf-8", "replace").strip()
            if line in wanted:
                return Handshake(wanted[line], noise, rest=buf)
            if line == NO_PYTHON_MARK:
                return Handshake("no-python", noise)
            found = client.parse_answer(raw) if line.startswith("{") else None
            if found is not None and not found.ok:
                return Handshake("agent-error", noise, found.error[:300])
            noise += 1
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return Handshake("deadline", noise)
        chan.settimeout(min(remaining, 1.0))
        try:
            chunk = chan.recv(4096)
        except TimeoutError:
            continue
        except (OSError, EOFError, *paramiko_errors()):
            return Handshake("eof", noise)
        if not chunk:
            return Handshake("eof", noise)
        buf += chunk
        if len(buf) > 1 << 20:  # a noisy login shell must not grow memory without bound
            buf = buf[-4096:]


def read_answer_line(chan: paramiko.Channel, buf: bytes) -> bytes:
    """The agent's next whole stdout line (no deadline: an inventory may hash for a while, as a
    plain inventory exec may); b"" when the channel ends first."""
    chunks = [buf]
    while b"\n" not in chunks[-1]:
        chan.settimeout(1.0)
        try:
            chunk = chan.recv(1 << 16)
        except TimeoutError:
            continue
        except (OSError, EOFError, *paramiko_errors()):
            return b""
        if not chunk:
            return b""
        chunks.append(chunk)
    return b"".join(chunks).split(b"\n", 1)[0]


def _lease_inventory(chan: paramiko.Channel, rest: bytes, dataset: str, target: str) -> Inventory:
    found = client.parse_answer(read_answer_line(chan, rest))
    if found is None:
        raise TransferError(f"Remote inventory of '{dataset}' under its lease on {target} gave no answer.")
    if not found.ok:
        raise TransferError(
            f"Remote inventory of '{dataset}' under its lease on {target} refused: {found.error[:300]}"
        )
    return Inventory.from_agent(found.result)


@contextlib.contextmanager
def hold_lease(
    chan: paramiko.Channel,
    *,
    token: str,
    dataset: str,
    target: str,
    timeout: float,
    events: str,
    slack: float = HANDSHAKE_SLACK_S,
    inventory: bool = False,
) -> Iterator[SshLease]:
    """Run the handshake on an exec channel already running the agent's `lease` op; with
    `inventory` (the op was asked for it) read the inventory line into `lease.inventory`."""
    label = "dataset lock" if events == "none" else "dataset lock (with event-log lock)"
    deadline = time.monotonic() + timeout + slack
    try:
        hs = read_handshake(chan, token, deadline)
    except BaseException:
        chan.close()
        raise
    if hs.outcome != "acquired":
        chan.close()
        if hs.outcome == "timeout":
            raise TransferError(
                f"Remote dataset lock for '{dataset}' timeout on {target} after {timeout:g} seconds"
            )
        if hs.outcome == "event-timeout":
            raise TransferError(
                f"Remote event-log lock for '{dataset}' timeout on {target} after {timeout:g} seconds"
            )
        if hs.outcome == "deadline":
            raise TransferError(
                f"Failed to acquire remote {label} for '{dataset}' on {target}: "
                f"Remote lock handshake exceeded {timeout + slack:g} seconds"
            )
        if hs.outcome == "no-python":
            raise TransferError(
                f"Failed to acquire remote {label} for '{dataset}' on {target}: python3 is not on the remote PATH "
                "(the lease runs the usrbatch agent); see `usr remotes doctor`."
            )
        if hs.outcome == "agent-error":
            raise TransferError(f"Failed to acquire remote {label} for '{dataset}' on {target}: {hs.detail}")
        noise = f"; stdout_noise_lines={hs.noise}" if hs.noise else ""
        raise TransferError(
            f"Failed to acquire remote {label} for '{dataset}' on {target}: "
            f"missing lock handshake marker; remote stderr suppressed{noise}"
        )
    lease = SshLease(token=token, channel=chan)
    body_failed = False
    try:
        if inventory:
            lease.inventory = _lease_inventory(chan, hs.rest, dataset, target)
        yield lease
    except BaseException:
        body_failed = True
        raise
    finally:
        code = _release(chan)
        if code != 0 and not body_failed:
            raise TransferError(
                f"Remote {label} release failed on {target}: remote lock session exited with code {code}; "
                "remote stderr suppressed"
                if code is not None
                else f"Remote {label} for '{dataset}' was lost on {target} before release"
            )


def _release(chan: paramiko.Channel) -> int | None:
    """Ask the holder to release; the exit code, or None when the channel was already gone."""
    transport = chan.get_transport()
    if chan.closed or transport is None or not transport.is_active():
        chan.close()
        return None  # the connection died: the remote holder saw EOF and released
    try:
        if not chan.exit_status_ready():
            with contextlib.suppress(OSError, EOFError, *paramiko_errors()):
                chan.sendall(b"release\n")
                chan.shutdown_write()
        deadline = time.monotonic() + RELEASE_WAIT_S
        while not chan.exit_status_ready():
            # An `ssh` process channel is "inactive" exactly when it has exited: look at the exit
            # status once more, or a holder that released between the two checks reads as lost.
            if not transport.is_active() and not chan.exit_status_ready():
                return None
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.02)
        return chan.recv_exit_status()
    finally:
        chan.close()
