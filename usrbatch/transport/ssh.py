"""The `ssh` transport: paramiko, one connection per transport object, reused for everything.

Why over ~400 lines: one Transport implementation whose exec, SFTP transfer, resume and retry
methods share one connection's state (connect, lease, shell and stream helpers are already in
ssh_*.py).

- exec channels run the stdlib agent (usrbatch/agent/remote.py) in ONE round trip per inventory,
  apply (with the uploads' remote sha256 check and the post-apply inventory folded in), hash
  batch or mkdir batch; `stats.execs` counts them; after the first answer every exec runs the
  interpreter path the agent reported (no PATH/pyenv shim);
- file data moves through agent streams (ssh_stream.py, StreamTransfers): one exec carries a
  whole batch (or one of a few parallel groups), hashed on both sides as it passes; the
  receiving agent makes the parents and its hashes spare apply a second read. SFTP (pipelined
  writes, segmented prefetched reads, a small pool of sessions) remains only for a remote
  without python3 (`force_sh`);
- downloads/uploads resume a partial destination from its size; the final sha256 decides;
  tenacity retries each stream and the connection (reconnecting after a drop), logging `sync.retry`;
- the dataset lease is the agent's `lease` op on its own exec channel (ssh_lease.py).

All remote paths are base_dir + a validated relative path; user strings reach a shell only as
shlex-quoted positional arguments (ssh_shell.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import secrets
import select
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from usrbatch.agent import client
from usrbatch.agent.answers import hashes_from_agent
from usrbatch.auditlog import get_logger
from usrbatch.errors import RemoteUnavailableError, TransferError, UsrError, VerificationError
from usrbatch.files import sha256_prefix
from usrbatch.remotes import RemoteConfig
from usrbatch.transport import ssh_shell
from usrbatch.transport.base import (
    EventLockMode,
    FileStat,
    Inventory,
    ProgressFn,
    Transfer,
    validate_relpath,
)
from usrbatch.transport.paramiko_lazy import MAX_PACKET, WINDOW_SIZE, paramiko_errors
from usrbatch.transport.ssh_config import SshEndpoint, resolve_endpoint
from usrbatch.transport.ssh_lease import SshLease, hold_lease
from usrbatch.transport.ssh_stream import StreamTransfers

if TYPE_CHECKING:  # paramiko is imported where it is used (paramiko_lazy.py)
    import paramiko

    from usrbatch.transport.ssh_connect import Connection

T = TypeVar("T")
READ_SEGMENT = 4 * 1024 * 1024  # bytes requested ahead per prefetch round per session (bounded memory)
READ_BLOCK = 1024 * 1024
SFTP_DEFAULT_REQUEST = 32 * 1024  # what every SFTP server takes (paramiko's own size)
SFTP_MAX_REQUEST = 255 * 1024  # OpenSSH's limit (256 KiB messages minus headers)
WRITE_BLOCK = 1024 * 1024
DEFAULT_RETRIES = 4
DEFAULT_BACKOFF = 0.5
DEFAULT_WORKERS = 4


def sftp_request_sizes(client: paramiko.SFTPClient) -> tuple[int, int]:
    """(read, write) request sizes from the server's `limits@openssh.com` extension (one round
    trip), each capped at SFTP_MAX_REQUEST (or $USRBATCH_SFTP_REQUEST_MAX); SFTP_DEFAULT_REQUEST
    for a size the server does not state, and for servers without the extension (they answer
    OP_UNSUPPORTED)."""
    import paramiko  # loaded already: `client` is paramiko's
    from paramiko.sftp import CMD_EXTENDED, CMD_EXTENDED_REPLY

    try:
        kind, msg = client._request(CMD_EXTENDED, "limits@openssh.com")
        if kind != CMD_EXTENDED_REPLY:
            return SFTP_DEFAULT_REQUEST, SFTP_DEFAULT_REQUEST
        _packet, read, write = msg.get_int64(), msg.get_int64(), msg.get_int64()
    except (OSError, paramiko.SSHException, EOFError, ValueError):
        return SFTP_DEFAULT_REQUEST, SFTP_DEFAULT_REQUEST

    cap = max(1024, _env_number("USRBATCH_SFTP_REQUEST_MAX", SFTP_MAX_REQUEST, int))  # a knob for odd servers

    def pick(limit: int) -> int:
        return min(limit, cap) if limit > 0 else SFTP_DEFAULT_REQUEST

    return pick(read), pick(write)


@dataclass
class TransportStats:
    """Counters for tests, benchmarks and the audit log."""

    execs: int = 0  # exec channels opened (remote round trips)
    connects: int = 0
    sftp_sessions: int = 0
    bytes_down: int = 0
    bytes_up: int = 0
    retries: int = 0
    resumed: int = 0  # files continued from a partial destination
    logins: int = 0  # SSH logins made (openssh: ControlMaster starts; 0 when a live one was reused)


class _Restart(Exception):
    """A resumed file failed its hash: redo it from byte 0 (once)."""


def _is_connection_error(exc: BaseException) -> bool:
    if isinstance(exc, UsrError):
        return getattr(exc, "transient", False)
    if isinstance(exc, (EOFError, ConnectionError, socket.timeout, *paramiko_errors())):
        return True
    # paramiko reports a dead socket as a bare OSError without errno; SFTP status errors
    # (no such file, permission denied) carry an errno and are not retried.
    return isinstance(exc, OSError) and exc.errno is None


def _env_number(name: str, default: float, cast: Callable[[str], Any]) -> Any:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return cast(raw)
    except ValueError as exc:
        raise TransferError(f"{name} must be a number, got {raw!r}.") from exc


class SshTransport(StreamTransfers):
    """Transport over one paramiko SSH connection (see module doc). Thread-safe for its own pool."""

    def __init__(
        self,
        remote: RemoteConfig,
        *,
        ssh_config_path: Path | None = None,
        known_hosts: Path | list[Path] | None = None,
        connect_timeout: float = 10.0,
        retries: int | None = None,
        backoff: float | None = None,
        workers: int = DEFAULT_WORKERS,
        window_size: int = WINDOW_SIZE,
        force_sh: bool = False,
    ) -> None:
        self.endpoint: SshEndpoint = resolve_endpoint(
            remote, ssh_config_path=ssh_config_path, known_hosts=known_hosts
        )
        self._init_state(
            remote,
            connect_timeout=connect_timeout,
            retries=retries,
            backoff=backoff,
            workers=workers,
            window_size=window_size,
            force_sh=force_sh,
        )

    def _init_state(
        self,
        remote: RemoteConfig,
        *,
        connect_timeout: float,
        retries: int | None,
        backoff: float | None,
        workers: int,
        window_size: int,
        force_sh: bool,
    ) -> None:
        """Everything but the endpoint (shared with openssh.py, which lets OpenSSH resolve it)."""
        self.remote = remote
        self.connect_timeout = connect_timeout
        self.retries = max(
            1, retries if retries is not None else _env_number("USRBATCH_SSH_RETRIES", DEFAULT_RETRIES, int)
        )
        self.backoff = (
            backoff if backoff is not None else _env_number("USRBATCH_SSH_BACKOFF", DEFAULT_BACKOFF, float)
        )
        self.workers = max(1, workers)
        self.window_size = window_size
        self.force_sh = force_sh  # tests: behave as if the remote had no python3
        self.stats = TransportStats()
        self._lock = threading.RLock()
        self._sent_mtimes: dict[str, int] = {}  # uploaded remote path -> its source's mtime_ns
        self._conn: Connection | None = None
        self._generation = 0
        self._sftp_pool: list[tuple[int, paramiko.SFTPClient]] = []
        self._sftp_limits: tuple[int, tuple[int, int]] | None = None  # (generation, (read, write))
        self._abs_base: str | None = None
        self._python = ""  # the remote interpreter path the agent reported (skips PATH shims)
        self._ship = "first"  # the agent's source goes along: "first" exec, "always", or only its "hash"
        self._closed = False

    # ------------------------------------------------------------------ connection plumbing

    @property
    def label(self) -> str:
        return f"{self.endpoint.target}:{self.remote.base_dir}"

    @property
    def target(self) -> str:
        return self.endpoint.target

    def connect(self) -> Connection:
        """The live connection, (re)connecting when there is none or it died."""
        with self._lock:
            if self._closed:
                raise TransferError(f"Transport to {self.target} is closed.")
            if self._conn is not None and self._conn.active():
                return self._conn
            self._drop_connection()
            self._conn = self._retry(self._open, what="connect", path=self.target)
            self.stats.connects += 1
            self.stats.logins += 1
            return self._conn

    def adopt(self, connection: Connection) -> None:
        """Use an already authenticated connection (doctor checks step by step, then reuses it)."""
        with self._lock:
            self._drop_connection()
            self._conn = connection
            self.stats.connects += 1

    def run_sh(self, script: str, *args: str, timeout: float | None = 60.0) -> tuple[int, str]:
        """ONE exec of a constant one-line sh script with quoted args: (exit code, stdout)."""
        rc, out, _err = self._exec(ssh_shell.sh_command(script, *args), timeout=timeout)
        return rc, out.decode("utf-8", "replace")

    def _open(self) -> Connection:
        from usrbatch.transport.ssh_connect import open_connection  # paramiko: the first login

        return open_connection(
            self.endpoint,
            connect_timeout=self.connect_timeout,
            batch_mode=self.remote.batch_mode,
            window_size=self.window_size,
        )

    def _drop_connection(self) -> None:
        with self._lock:
            pool, self._sftp_pool = self._sftp_pool, []
            for _gen, client in pool:
                with contextlib.suppress(Exception):
                    client.close()
            if self._conn is not None:
                self._conn.close()
                self._conn = None
                self._generation += 1

    def close(self) -> None:
        """Close every channel and the connection; further calls raise TransferError."""
        with self._lock:
            self._drop_connection()
            self._closed = True

    def __enter__(self) -> SshTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _retry(self, fn: Callable[[], T], *, what: str, path: str) -> T:
        """Run fn with tenacity: connection-class errors are retried with exponential backoff,
        the dead connection dropped first; each retry is logged as `sync.retry`."""

        def before_sleep(state: Any) -> None:
            exc = state.outcome.exception() if state.outcome else None
            self.stats.retries += 1
            self._drop_if_dead()
            get_logger().info(
                "sync.retry",
                op=what,
                path=path,
                attempt=state.attempt_number,
                error=f"{exc.__class__.__name__}: {exc}"[:300] if exc else None,
                remote=self.remote.name,
            )

        retrying = Retrying(
            stop=stop_after_attempt(self.retries),
            wait=wait_exponential(multiplier=self.backoff, max=30),
            retry=retry_if_exception(_is_connection_error),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            return retrying(fn)
        except UsrError:
            raise
        except Exception as exc:
            if _is_connection_error(exc):
                raise TransferError(
                    f"SSH {what} of {path} on {self.target} failed after {self.retries} attempt(s): "
                    f"{exc.__class__.__name__}: {exc}"
                ) from exc
            if isinstance(exc, OSError):  # an SFTP status: permission denied, not a directory, ...
                raise TransferError(
                    f"SSH {what} of {path} on {self.label} failed: {exc.strerror or exc}"
                ) from exc
            raise

    # ------------------------------------------------------------------ exec channels

    def _open_channel(self) -> paramiko.Channel:
        conn = self.connect()
        chan = conn.transport.open_session(window_size=self.window_size, max_packet_size=MAX_PACKET)
        with self._lock:
            self.stats.execs += 1
        return chan

    def _exec(
        self, command: str, stdin: bytes = b"", *, timeout: float | None = None
    ) -> tuple[int, bytes, bytes]:
        """One remote command: (exit code, stdout, last 64 KiB of stderr)."""
        chan = self._open_channel()
        out: list[bytes] = []
        err = b""
        try:
            chan.exec_command(command)
            if stdin:
                chan.sendall(stdin)
            chan.shutdown_write()
            deadline = time.monotonic() + timeout if timeout else None
            while True:
                progressed = False
                if chan.recv_stderr_ready():
                    err = (err + chan.recv_stderr(65536))[-65536:]
                    progressed = True
                if chan.recv_ready():
                    out.append(chan.recv(1 << 20))
                    progressed = True
                if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
                if chan.closed or not chan.get_transport().is_active():
                    raise EOFError("SSH connection dropped during a remote command")
                if deadline is not None and time.monotonic() > deadline:
                    raise TransferError(f"Remote command on {self.target} exceeded {timeout:g} seconds.")
                if not progressed:
                    select.select([chan], [], [], 0.05)
            # drain whatever arrived with the exit status
            while chan.recv_ready():
                out.append(chan.recv(1 << 20))
            return chan.recv_exit_status(), b"".join(out), err
        finally:
            chan.close()

    def _agent_answer(self, rc: int, out: bytes, err: bytes, what: str) -> Any:
        """The agent's result in a command's output (client.result_of maps its refusals)."""
        answer = client.parse_answer(out)
        if answer is not None:
            if answer.python:
                self._python = answer.python
            return client.result_of(answer, what=what, target=self.target, label=self.label)
        if ssh_shell.NO_PYTHON_MARK in out.decode("utf-8", "replace"):
            raise RemoteUnavailableError(
                f"Remote {what} on {self.target} needs python3, which is not on the remote PATH.",
                hint="Load a python3 module in your remote shell profile, or ask the admins for python3.",
            )
        last = err.decode("utf-8", "replace").strip().splitlines()[-1:] or ["(no stderr)"]
        raise TransferError(f"Remote {what} on {self.target} gave no answer (exit {rc}): {last[0][:200]}")

    def _agent_exec(self, command: str, request: dict) -> tuple[int, bytes, bytes]:
        """One exec of `command` with the agent `request` on its stdin. The agent's source goes
        along on the first exec; once an answer came, only its hash (the remote runs its verified
        compiled copy). A remote that ran nothing for want of the source is asked again with it,
        and gets it on every later exec too (its cache is gone or unusable)."""
        with_source = self._ship != "hash"
        rc, out, err = self._exec(command, client.encode(request, with_source=with_source))
        if not with_source and client.needs_source(out):
            self._ship = "always"
            rc, out, err = self._exec(command, client.encode(request, with_source=True))
        elif self._ship == "first" and client.parse_answer(out) is not None:
            self._ship = "hash"
        return rc, out, err

    def _agent(self, request: dict, what: str) -> Any:
        command = ssh_shell.agent_command(force_sh=self.force_sh, python=self._python)
        rc, out, err = self._agent_exec(command, request)
        return self._agent_answer(rc, out, err, what)

    # ------------------------------------------------------------------ paths

    def _remote_path(self, rel: str) -> str:
        return posixpath.join(self._base_for_sftp(), validate_relpath(rel, what="remote path"))

    def _base_for_sftp(self) -> str:
        """base_dir as SFTP needs it: `~` expanded against the remote home directory."""
        if self._abs_base is None:
            base = self.remote.base_dir
            if base == "~" or base.startswith("~/"):
                with self._sftp() as sftp:
                    home = sftp.normalize(".")
                base = home + base[1:]
            self._abs_base = base
        return self._abs_base

    # ------------------------------------------------------------------ Transport protocol

    def inventory(self, rel_dir: str, *, hashes: bool = True, parquet_stats: bool = False) -> Inventory:
        """ONE exec: the agent (or the sh fallback) inventories `<base_dir>/<rel_dir>`."""
        base = self.remote.base_dir
        request = client.inventory_request(base, rel_dir, hashes=hashes, parquet_stats=parquet_stats)
        rel = request["rel"]

        def run() -> Inventory:
            command = ssh_shell.inventory_command(
                base, rel, hashes, force_sh=self.force_sh, python=self._python
            )
            rc, out, err = self._agent_exec(command, request)
            text = out.decode("utf-8", "replace")
            if ssh_shell.SH_MARK in text and not text.lstrip().startswith("{"):
                try:
                    return Inventory.from_agent(ssh_shell.parse_sh_inventory(text, hashes))
                except ValueError as exc:
                    raise EOFError(f"incomplete inventory output ({exc})") from exc
            return Inventory.from_agent(self._agent_answer(rc, out, err, "inventory"))

        return self._retry(run, what="inventory", path=rel)

    def remote_hashes(self, paths: Sequence[str]) -> dict[str, tuple[int, int, str | None] | None]:
        """ONE exec: (size, mtime_ns, sha256) of each relative path; None when not a regular file."""
        request = client.hash_request(self.remote.base_dir, paths)
        rels: list[str] = request["paths"]
        if not rels:
            return {}

        def run() -> dict:
            command = ssh_shell.hash_command(
                self.remote.base_dir, rels, force_sh=self.force_sh, python=self._python
            )
            if len(command) > 100_000:  # the sh fallback passes paths as arguments; the agent does not
                command = ssh_shell.agent_command(force_sh=self.force_sh, python=self._python)
            rc, out, err = self._agent_exec(command, request)
            text = out.decode("utf-8", "replace")
            if ssh_shell.SH_MARK in text and not text.lstrip().startswith("{"):
                try:
                    return ssh_shell.parse_sh_hashes(text)
                except ValueError as exc:
                    raise EOFError(f"incomplete hash output ({exc})") from exc
            return self._agent_answer(rc, out, err, "hash")

        return hashes_from_agent(self._retry(run, what="hash", path=f"{len(rels)} file(s)"), rels)

    def mkdirs(self, rel_dirs: Sequence[str]) -> None:
        """ONE exec: create `<base_dir>/<rel>` for each rel (and base_dir itself)."""
        request = client.mkdir_request(self.remote.base_dir, rel_dirs)
        count = f"{len(request['paths'])} dir(s)"
        self._retry(lambda: self._agent(request, "mkdir"), what="mkdir", path=count)

    def apply(
        self,
        renames: Sequence[tuple[str, str]],
        removals: Sequence[str],
        *,
        verify: Mapping[str, str] | None = None,
        inventory: str | None = None,
        parquet_stats: bool = False,
        payload: Mapping[str, str] | None = None,
        snapshot: tuple[str, str] | None = None,
    ) -> Inventory | None:
        """ONE exec of the agent's `apply` op: check the `verify` hashes, validate the `payload`
        files, copy the `snapshot`, rename, remove, and (with `inventory`) inventory the dataset
        afterwards. Not retried once sent (renames are not idempotent)."""
        with self._lock:  # uploads keep their source's mtime, as rsync -t (set before verify)
            mtimes = {s: self._sent_mtimes.pop(s) for s, _d in renames if s in self._sent_mtimes}
        request = client.apply_request(
            self.remote.base_dir,
            renames,
            removals,
            verify=verify,
            mtimes=mtimes,
            payload=payload,
            snapshot=snapshot,
            inventory=inventory,
            parquet_stats=parquet_stats,
        )
        if request is None:
            return None
        self.connect()
        try:
            result = self._agent(request, "apply")
        except UsrError:
            raise
        except Exception as exc:
            raise TransferError(
                f"Remote apply on {self.target} was interrupted ({exc.__class__.__name__}: {exc}); "
                "its outcome is unknown: re-run the command to re-inventory and converge."
            ) from exc
        if inventory is None:
            return None
        if not isinstance(result, dict):
            raise TransferError(f"Remote apply on {self.target} answered without its inventory.")
        return Inventory.from_agent(result.get("inventory"))

    def stat_file(self, rel: str, *, hashes: bool = True, parquet_stats: bool = False) -> FileStat:
        """ONE exec of the agent's `stat` op (FILE mode); needs python3 on the remote."""
        request = client.stat_request(self.remote.base_dir, rel, hashes=hashes, parquet_stats=parquet_stats)
        data = self._retry(lambda: self._agent(request, "stat"), what="stat", path=request["rel"])
        return FileStat.from_agent(data)

    def probe(self) -> dict:
        """ONE exec of the agent's `probe` op (versions/tools; base_dir exists and is writable)."""
        found = self._agent(client.probe_request(self.remote.base_dir), "probe")
        if not isinstance(found, dict):
            raise TransferError(f"Remote probe on {self.target} answered without its findings.")
        return found

    @contextlib.contextmanager
    def lease(
        self,
        rel_dir: str,
        *,
        timeout: float = 300.0,
        events: EventLockMode = "none",
        inventory: bool = False,
        parquet_stats: bool = False,
    ) -> Iterator[SshLease]:
        """Hold `<rel_dir>/.usr.lock` (+ `.events.lock`) via the agent on its own exec channel;
        with `inventory` the same exec inventories the locked dataset (`lease.inventory`)."""
        token = secrets.token_hex(16)
        request = client.lease_request(
            self.remote.base_dir,
            rel_dir,
            token=token,
            timeout=timeout,
            events=events,
            inventory=inventory,
            parquet_stats=parquet_stats,
        )
        rel = request["rel"]

        def start() -> paramiko.Channel:
            # Open, exec and send as one retried unit: a link cut before the agent has the
            # request holds nothing remotely, so starting over on a new connection is safe
            # (a bare OSError from sendall on a dead socket is a connection error, not a crash).
            chan = self._open_channel()
            try:
                chan.exec_command(ssh_shell.agent_command(force_sh=self.force_sh, python=self._python))
                chan.sendall(client.encode(request, with_source=True))  # no second try mid-handshake
            except BaseException:
                chan.close()
                raise
            return chan

        chan = self._retry(start, what="lease", path=rel)
        with hold_lease(
            chan,
            token=token,
            dataset=rel,
            target=self.target,
            timeout=timeout,
            events=events,
            inventory=inventory,
        ) as held:
            yield held

    # ------------------------------------------------------------------ file data (SFTP)

    # Connection hooks: what a transport with another connection (openssh.py) replaces.

    def _drop_if_dead(self) -> None:
        """Before a retry: forget the connection when it died, so the next use reconnects."""
        with self._lock:
            if self._conn is not None and not self._conn.active():
                self._drop_connection()

    def _connection_alive(self) -> bool:
        return self._conn is not None and self._conn.active()

    def _open_sftp_client(self) -> paramiko.SFTPClient:
        """A new SFTP session on the live connection."""
        import paramiko  # loaded already by the connection

        conn = self.connect()
        client = paramiko.SFTPClient.from_transport(
            conn.transport, window_size=self.window_size, max_packet_size=MAX_PACKET
        )
        if client is None:
            raise EOFError("could not open an SFTP session")
        return client

    @contextlib.contextmanager
    def _sftp(self) -> Iterator[paramiko.SFTPClient]:
        self.connect()
        with self._lock:
            generation = self._generation
            client = None
            while self._sftp_pool:
                gen, candidate = self._sftp_pool.pop()
                if gen == generation:
                    client = candidate
                    break
        if client is None:
            client = self._open_sftp_client()
            with self._lock:
                self.stats.sftp_sessions += 1
        reusable = False
        try:
            yield client
            reusable = True
        finally:
            with self._lock:
                if reusable and generation == self._generation and self._connection_alive():
                    self._sftp_pool.append((generation, client))
                else:
                    with contextlib.suppress(Exception):
                        client.close()

    def _request_sizes(self, client: paramiko.SFTPClient) -> tuple[int, int]:
        """(read, write) bytes per SFTP request for this connection, asked once per connection:
        the server's `limits@openssh.com` answer (OpenSSH 8.7+: 255 KiB, so 8x fewer requests
        and replies to process than paramiko's 32 KiB; +40 % download rate on loopback), capped
        at SFTP_MAX_REQUEST; SFTP_DEFAULT_REQUEST when the server does not say."""
        with self._lock:
            generation = self._generation
            if self._sftp_limits is not None and self._sftp_limits[0] == generation:
                return self._sftp_limits[1]
        sizes = sftp_request_sizes(client)
        with self._lock:
            self._sftp_limits = (generation, sizes)
        return sizes

    def _run_batch(self, items: Sequence[Any], one: Callable[[Any], None]) -> None:
        if not items:
            return
        self.connect()
        if len(items) == 1 or self.workers == 1:
            for item in items:
                one(item)
            return
        with ThreadPoolExecutor(
            max_workers=min(self.workers, len(items)), thread_name_prefix="usr-ssh"
        ) as pool:
            futures = [pool.submit(one, item) for item in items]
            errors = []
            for fut in futures:
                try:
                    fut.result()
                except BaseException as exc:
                    errors.append(exc)
            if errors:
                raise errors[0]

    def download(self, items: Sequence[Transfer], *, progress: ProgressFn | None = None) -> None:
        """Remote → local for each item; resumes a partial local file; the sha256 decides. By agent
        streams (ssh_stream.py); over SFTP when the remote has no python3 (force_sh)."""
        for item in items:
            validate_relpath(item.remote, what="remote path")
        if not self.force_sh:
            self.stream_download(items, progress)
            return

        def one(item: Transfer) -> None:
            validate_relpath(item.remote, what="remote path")
            try:
                self._retry(
                    lambda: self._download_one(item, progress, False), what="download", path=item.remote
                )
            except _Restart:
                self._retry(
                    lambda: self._download_one(item, progress, True), what="download", path=item.remote
                )

        self._run_batch(items, one)

    def _download_one(self, item: Transfer, progress: ProgressFn | None, restart: bool) -> None:
        remote = self._remote_path(item.remote)
        local = Path(item.local)
        local.parent.mkdir(parents=True, exist_ok=True)
        with self._sftp() as sftp:
            try:
                rf = sftp.open(remote, "rb")
            except FileNotFoundError as exc:
                raise TransferError(f"Remote file missing: {item.remote} on {self.label}") from exc
            rf.MAX_REQUEST_SIZE = self._request_sizes(sftp)[0]
            with rf:
                size = rf.stat().st_size
                offset = 0
                if not restart and local.is_file():
                    have = local.stat().st_size
                    offset = have if have <= size else 0
                h = sha256_prefix(local, offset) if offset else hashlib.sha256()
                if offset:
                    with self._lock:
                        self.stats.resumed += 1
                with local.open("r+b" if offset else "wb") as lf:
                    lf.seek(offset)
                    pos = offset
                    while pos < size:
                        seg_end = min(size, pos + READ_SEGMENT)
                        chunks = [(p, min(READ_BLOCK, seg_end - p)) for p in range(pos, seg_end, READ_BLOCK)]
                        for data in rf.readv(chunks):
                            if not data:
                                raise EOFError(f"short read of {item.remote}")
                            lf.write(data)
                            h.update(data)
                            pos += len(data)
                            with self._lock:
                                self.stats.bytes_down += len(data)
                            if progress:
                                progress(item.remote, len(data))
                    lf.truncate(pos)
        digest = h.hexdigest()
        if digest != item.sha256:
            if offset and not restart:
                raise _Restart()
            raise VerificationError(
                f"Downloaded {item.remote} does not match: sha256 {digest} != expected {item.sha256} "
                f"(from {self.label})."
            )

    def upload(self, items: Sequence[Transfer], *, progress: ProgressFn | None = None) -> None:
        """Local → remote for each item, parents created over SFTP (no exec). A fresh upload is
        checked remotely by the following `apply(verify=...)` (no round trip here). When the
        connection was re-made during the batch, every file is hashed remotely now (ONE exec)
        and redone from byte 0 once when it differs: the dead session's sftp-server can still
        execute requests it had queued (an open with truncate, a write) after the new session
        started the same file, so "not resumed" does not mean "intact"."""
        if not items:
            return
        for item in items:
            validate_relpath(item.remote, what="remote path")
            if not Path(item.local).is_file():
                raise TransferError(f"Local file to upload is missing: {item.local}")
        if not self.force_sh:  # agent streams (ssh_stream.py): parents made and hashes taken remotely
            self.stream_upload(items, progress)
            return
        parents = {posixpath.dirname(validate_relpath(i.remote)) for i in items}
        if "" in parents:  # a file directly under base_dir (FILE mode): base_dir itself, mkdir -p
            self._retry(self._sftp_makedirs_base, what="mkdir", path=self.remote.base_dir)
        parents.discard("")
        self._retry(lambda: self._sftp_makedirs(sorted(parents)), what="mkdir", path=f"{len(parents)} dir(s)")
        resumed: set[str] = set()
        connects_before = self.stats.connects  # the mkdir step above left a live connection

        def one(item: Transfer, restart: bool = False) -> None:
            if self._retry(
                lambda: self._upload_one(item, progress, restart), what="upload", path=item.remote
            ):
                with self._lock:
                    resumed.add(item.remote)

        self._run_batch(items, one)
        reconnected = self.stats.connects > connects_before
        if not resumed and not reconnected:
            return
        partial = list(items) if reconnected else [i for i in items if i.remote in resumed]
        bad = self._verify_uploads(partial)
        redo = [i for i in partial if i.remote in bad]
        if redo:
            self._run_batch(redo, lambda item: one(item, True))
            bad = self._verify_uploads(redo)
        if bad:
            first = next(iter(bad.items()))
            raise VerificationError(
                f"Uploaded {first[0]} does not match on {self.label}: remote sha256 {first[1]} "
                f"({len(bad)} file(s) failed verification)."
            )

    def _sftp_makedirs_base(self) -> None:
        """Create base_dir and its missing ancestors over SFTP (one lstat when it exists)."""
        base = self._base_for_sftp()
        with self._sftp() as sftp:
            missing: list[str] = []
            path = base
            while True:
                try:
                    st = sftp.stat(path)  # follows links: a symlinked base_dir is fine
                except FileNotFoundError:
                    missing.append(path)
                    parent = posixpath.dirname(path)
                    if parent in (path, ""):
                        break
                    path = parent
                    continue
                if not stat.S_ISDIR(st.st_mode or 0) and path == base:
                    raise TransferError(f"Remote path is not a directory: {path} on {self.target}")
                break
            for path in reversed(missing):
                try:
                    sftp.mkdir(path)
                except OSError:
                    if not stat.S_ISDIR(sftp.stat(path).st_mode or 0):  # lost a race: fine if a dir
                        raise

    def _sftp_makedirs(self, rel_dirs: Sequence[str]) -> None:
        """Create `<base>/<rel>` (and missing parents) for each rel over SFTP: one stat for a dir
        that exists, else mkdir from the nearest existing ancestor down."""
        if not rel_dirs:
            return
        base = self._base_for_sftp()
        with self._sftp() as sftp:
            known: set[str] = set()
            for rel in rel_dirs:
                parts = validate_relpath(rel, what="mkdir path").split("/")
                missing: list[str] = []
                for depth in range(len(parts), 0, -1):
                    path = posixpath.join(base, *parts[:depth])
                    if path in known:
                        break
                    try:
                        st = sftp.lstat(path)
                    except FileNotFoundError:
                        missing.append(path)
                        continue
                    if not stat.S_ISDIR(st.st_mode or 0):
                        raise TransferError(f"Remote path is not a directory: {path} on {self.target}")
                    break
                if len(missing) == len(parts):
                    try:
                        sftp.lstat(base)
                    except FileNotFoundError:
                        missing.append(base)
                for path in reversed(missing):
                    try:
                        sftp.mkdir(path)
                    except OSError:
                        if not stat.S_ISDIR(sftp.lstat(path).st_mode or 0):  # lost a race: fine if a dir
                            raise
                known.update(posixpath.join(base, *parts[:d]) for d in range(1, len(parts) + 1))

    def _verify_uploads(self, items: Sequence[Transfer]) -> dict[str, str | None]:
        found = self.remote_hashes([i.remote for i in items])
        bad: dict[str, str | None] = {}
        for item in items:
            got = found.get(item.remote)
            sha = got[2] if got else None
            if sha != item.sha256:
                bad[item.remote] = sha
        return bad

    def _upload_one(self, item: Transfer, progress: ProgressFn | None, restart: bool) -> bool:
        """Send one file; True when it continued a partial remote file."""
        remote = self._remote_path(item.remote)
        local = Path(item.local)
        local_size = local.stat().st_size
        with self._sftp() as sftp:
            offset = 0
            if not restart:
                with contextlib.suppress(FileNotFoundError):
                    have = sftp.stat(remote).st_size or 0
                    offset = have if have <= local_size else 0
            if offset:
                with self._lock:
                    self.stats.resumed += 1
            h = sha256_prefix(local, offset) if offset else hashlib.sha256()
            wf = sftp.open(remote, "r+b" if offset else "wb")
            wf.MAX_REQUEST_SIZE = self._request_sizes(sftp)[1]
            with wf, local.open("rb") as lf:
                sent_mtime = os.fstat(lf.fileno()).st_mtime_ns
                wf.set_pipelined(True)
                wf.seek(offset)
                lf.seek(offset)
                while True:
                    block = lf.read(WRITE_BLOCK)
                    if not block:
                        break
                    wf.write(block)
                    h.update(block)
                    with self._lock:
                        self.stats.bytes_up += len(block)
                    if progress:
                        progress(item.remote, len(block))
        if h.hexdigest() != item.sha256:
            raise VerificationError(
                f"Local file {local} changed: sha256 {h.hexdigest()} != expected {item.sha256}; re-run to re-plan."
            )
        with self._lock:
            self._sent_mtimes[item.remote] = sent_mtime
        return offset > 0
