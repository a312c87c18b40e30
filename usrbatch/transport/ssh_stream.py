"""File bytes through agent execs: the client side of the agent's `recv` and `send` ops.

One exec carries a whole group of files as one stream (no per-file round trip: 2,000 small parts
cost one session, not 2,000 SFTP open/write/close exchanges), and each side hashes the bytes as
they pass (one pass each side, as rsync does): the sender hashes what it reads, the receiver what
it writes. Framing, on the exec's stdin/stdout after the agent's bootstrap and request line:

  upload (`recv`): agent -> `{"ok": true, "offsets": [n, ...]}` (bytes it kept of each partial
      temp: the resume points), client -> exactly size - offset bytes of each file in request
      order, then EOF; agent -> `{"ok": true, "result": {"files": [sha256, ...]}}`.
  download (`send`): for each requested [rel, offset], agent -> a header line `{"size": S,
      "from": F}` (or `{"error": ...}`) and exactly S - F bytes; then the result line.

Nothing the remote sends is trusted: header lines are bounded JSON objects checked field by
field, sizes must equal the inventory's, byte counts are exact, a short stream is a dropped
connection (retried: the next stream resumes from the kept bytes), and every file's sha256 is
computed here from the bytes themselves and compared with the expected one.

Large batches are split into a few streams run side by side (`stream_groups`), each one exec,
memory bounded by one CHUNK per stream.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from usrbatch.agent import client
from usrbatch.errors import RemoteUnavailableError, TransferError, VerificationError
from usrbatch.files import sha256_prefix
from usrbatch.remotes import RemoteConfig
from usrbatch.transport import ssh_shell
from usrbatch.transport.base import ProgressFn, Transfer

CHUNK = 1024 * 1024
STREAM_BYTES = 64 * 1024 * 1024  # a batch gets a second stream only above this much data
LINE_MAX = 64 * 1024  # a header line longer than this is a protocol breach
PER_FILE_MAX = 128  # answer lines grow by this much per file of the stream (a sha256 or an offset)
STREAMS_ENV = "USRBATCH_STREAMS"  # force the number of parallel streams (1 = one exec per batch)


class Channel(Protocol):
    """What a stream needs of a session: paramiko's Channel and openssh_channel.ProcessChannel."""

    def exec_command(self, command: str) -> None: ...

    def sendall(self, data: bytes) -> None: ...

    def recv(self, size: int) -> bytes: ...

    def shutdown_write(self) -> None: ...

    def close(self) -> None: ...


class StreamBroken(EOFError):
    """The stream ended early or broke its framing: a connection-class error (retried, resumed)."""


def stream_groups(items: Sequence[Transfer], workers: int) -> list[list[Transfer]]:
    """Split a batch into parallel streams: as many as there are STREAM_BYTES (or largest-file)
    shares of the data, at most `workers` ($USRBATCH_STREAMS forces a count); files assigned
    largest first to the lightest stream, each group keeping the batch's order."""
    if not items:
        return []
    raw = os.environ.get(STREAMS_ENV, "").strip()
    total = sum(i.size for i in items)
    share = max(STREAM_BYTES, max(i.size for i in items))
    count = int(raw) if raw.isdigit() and int(raw) > 0 else min(workers, math.ceil(total / share))
    count = max(1, min(count, len(items)))
    loads = [0] * count
    slots: dict[int, int] = {}
    for index in sorted(range(len(items)), key=lambda k: -items[k].size):
        lightest = loads.index(min(loads))
        slots[index] = lightest
        loads[lightest] += items[index].size
    groups: list[list[Transfer]] = [[] for _ in range(count)]
    for index, item in enumerate(items):
        groups[slots[index]].append(item)
    return [g for g in groups if g]


class Reader:
    """Bounded lines and exact byte counts from a channel: one received block at a time, sliced
    by position (no copy of what is not handed out; small files cost no buffer shifting)."""

    def __init__(self, chan: Channel) -> None:
        self.chan = chan
        self.buf = b""
        self.pos = 0

    def _fill(self) -> None:
        data = self.chan.recv(CHUNK)
        if not data:
            raise StreamBroken("the remote stream ended early")
        rest = self.buf[self.pos :]
        self.buf = rest + data if rest else data
        self.pos = 0

    def answer(self, limit: int = LINE_MAX) -> dict[str, Any]:
        """The agent's answer line, skipping what a login shell may print before it (a bounded
        number of lines that are not JSON objects)."""
        for _ in range(100):
            data = self._parse(self._raw_line(limit))
            if data is not None and "ok" in data:
                return data
        raise StreamBroken("the remote stream sent no answer")

    def line(self, limit: int = LINE_MAX) -> dict[str, Any]:
        """The next line as a JSON object (StreamBroken when it is not one)."""
        data = self._parse(self._raw_line(limit))
        if data is None:
            raise StreamBroken("the remote stream sent a malformed line")
        return data

    def _raw_line(self, limit: int) -> bytes:
        while True:
            end = self.buf.find(b"\n", self.pos)
            if end >= 0:
                break
            if len(self.buf) - self.pos > limit:
                raise StreamBroken("the remote stream sent an over-long line")
            self._fill()
        raw = self.buf[self.pos : end]
        self.pos = end + 1
        if ssh_shell.NO_PYTHON_MARK.encode() in raw:
            raise RemoteUnavailableError(
                "Remote transfer needs python3, which is not on the remote PATH.",
                hint="Load a python3 module in your remote shell profile, or ask the admins for python3.",
            )
        return raw

    @staticmethod
    def _parse(raw: bytes) -> dict[str, Any] | None:
        try:
            data = json.loads(raw.decode("utf-8"))
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    def exactly(self, count: int) -> Iterator[bytes]:
        """`count` bytes, in blocks of at most CHUNK."""
        left = count
        while left > 0:
            if self.pos >= len(self.buf):
                self._fill()
            take = min(left, len(self.buf) - self.pos)
            block = self.buf[self.pos : self.pos + take]
            self.pos += take
            left -= take
            yield block


def _int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise StreamBroken(f"the remote stream sent a bad {what}: {value!r}")
    return value


def answer(data: dict[str, Any], what: str, target: str) -> dict[str, Any]:
    """An agent answer line: refusals become TransferError (not retried), the rest is returned."""
    if data.get("ok") is True:
        return data
    if data.get("ok") is False:
        if isinstance(data.get("path"), str):
            raise TransferError(f"SSH {what} of {data['path']} on {target} failed: {data.get('error')}")
        raise TransferError(f"Remote {what} on {target} refused: {data.get('error')}")
    raise StreamBroken(f"the remote {what} stream sent no answer")


Moved = Callable[[str, int], None]  # (remote relpath, bytes just moved): progress and counters


def upload_request(base: str, items: Sequence[Transfer], mtimes: Sequence[int], restart: bool) -> dict:
    files = [[i.remote, i.size, m] for i, m in zip(items, mtimes, strict=True)]
    return {"op": "recv", "base": base, "files": files, "restart": restart}


def send_files(chan: Channel, items: Sequence[Transfer], offsets: Sequence[int], moved: Moved):
    """Write each file's bytes after its offset, hashing all of it here; raise VerificationError
    when a local file no longer matches its expected sha256 (it changed since the plan)."""
    pending: list[bytes] = []  # small files go out together, CHUNK at a time
    queued = 0
    for item, offset in zip(items, offsets, strict=True):
        local = Path(item.local)
        h = sha256_prefix(local, offset) if offset else hashlib.sha256()
        left = item.size - offset
        with local.open("rb", buffering=0) as fh:
            fh.seek(offset)
            while left > 0:
                block = fh.read(min(CHUNK, left))
                if not block:
                    break
                h.update(block)
                pending.append(block)
                queued += len(block)
                if queued >= CHUNK:
                    chan.sendall(b"".join(pending))
                    pending, queued = [], 0
                left -= len(block)
                moved(item.remote, len(block))
            grown = os.fstat(fh.fileno()).st_size != item.size  # rewritten while it was sent
        if left or grown or h.hexdigest() != item.sha256:
            raise VerificationError(
                f"Local file {local} changed: sha256 {h.hexdigest()} != expected {item.sha256}; "
                "re-run to re-plan."
            )
    if pending:
        chan.sendall(b"".join(pending))


def receive_files(
    reader: Reader, items: Sequence[Transfer], offsets: Sequence[int], moved: Moved, where: str
) -> tuple[list[Transfer], list[tuple[Transfer, str]], int]:
    """Read each requested file into its local path (resuming at its offset), hashing every byte
    here. Returns (files whose resumed copy failed its hash: redo from 0, files that failed after a
    full copy with the sha256 found, number resumed). Raises TransferError for a remote refusal."""
    redo: list[Transfer] = []
    bad: list[tuple[Transfer, str]] = []
    resumed = 0
    made: set[Path] = set()
    for item, offset in zip(items, offsets, strict=True):
        head = reader.line()
        if "error" in head:
            if head["error"] == "missing":
                raise TransferError(f"Remote file missing: {item.remote} on {where}")
            raise TransferError(f"Remote read of {item.remote} on {where} refused: {head['error']}")
        size, start = _int(head.get("size"), "size"), _int(head.get("from"), "offset")
        if start not in (0, offset):
            raise StreamBroken(f"the remote stream resumed {item.remote} at {start}, not {offset}")
        if size != item.size:
            raise VerificationError(
                f"Remote {item.remote} changed during the transfer: {size} bytes, expected {item.size} "
                f"(from {where}); re-run to re-plan."
            )
        local = Path(item.local)
        if local.parent not in made:
            local.parent.mkdir(parents=True, exist_ok=True)
            made.add(local.parent)
        h = sha256_prefix(local, start) if start else hashlib.sha256()
        resumed += bool(start)
        with local.open("r+b" if start else "wb") as fh:
            fh.seek(start)
            for block in reader.exactly(size - start):
                fh.write(block)
                h.update(block)
                moved(item.remote, len(block))
            fh.truncate(size)
        digest = h.hexdigest()
        if digest != item.sha256:
            if start:
                redo.append(item)
            else:
                bad.append((item, digest))
    return redo, bad, resumed


class StreamTransfers:
    """Upload and download by agent streams: what SshTransport (both backends) runs whenever the
    remote has python3 (the SFTP code stays for the sh-only fallback)."""

    remote: RemoteConfig
    workers: int
    stats: Any
    _lock: threading.RLock
    _python: str

    if TYPE_CHECKING:  # provided by SshTransport

        @property
        def label(self) -> str: ...

        def _open_channel(self) -> Any: ...

        def _retry(self, fn: Callable[[], Any], *, what: str, path: str) -> Any: ...

        def _run_batch(self, items: Sequence[Any], one: Callable[[Any], None]) -> None: ...

    def _moved(self, counter: str, progress: ProgressFn | None) -> Moved:
        def moved(rel: str, count: int) -> None:
            with self._lock:
                setattr(self.stats, counter, getattr(self.stats, counter) + count)
            if progress:
                progress(rel, count)

        return moved

    def _stream_open(self, request: dict) -> tuple[Channel, Reader, dict[str, Any]]:
        """One agent exec with `request`; its first answer line (refusals raised)."""
        chan = self._open_channel()
        try:
            chan.exec_command(ssh_shell.agent_command(python=self._python))
            chan.sendall(client.encode(request))  # the source too: a stream cannot be re-asked
            if request["op"] == "send":
                chan.shutdown_write()
            reader = Reader(chan)
            what = "upload" if request["op"] == "recv" else "download"
            first = answer(reader.answer(LINE_MAX + PER_FILE_MAX * len(request["files"])), what, self.label)
        except BaseException:
            chan.close()
            raise
        python = first.get("python")
        if isinstance(python, str) and python.startswith("/") and "\n" not in python:
            self._python = python
        return chan, reader, first

    def stream_upload(self, items: Sequence[Transfer], progress: ProgressFn | None) -> None:
        """Local -> remote by `recv` streams (stream_groups); a file whose remote hash differs
        is sent again from byte 0 once, then VerificationError."""
        moved = self._moved("bytes_up", progress)

        def group_done(group: list[Transfer]) -> None:
            mtimes = [Path(i.local).stat().st_mtime_ns for i in group]  # kept, as rsync -t
            what = f"{len(group)} file(s)" if len(group) > 1 else group[0].remote
            bad = self._retry(
                lambda: self._upload_stream(group, mtimes, moved, False), what="upload", path=what
            )
            if bad:
                again = [i for i, _sha in bad]
                times = [m for i, m in zip(group, mtimes, strict=True) if i in again]
                bad = self._retry(
                    lambda: self._upload_stream(again, times, moved, True), what="upload", path=what
                )
            if bad:
                (first, sha), count = bad[0], len(bad)
                raise VerificationError(
                    f"Uploaded {first.remote} does not match on {self.label}: remote sha256 {sha} "
                    f"({count} file(s) failed verification)."
                )

        self._run_batch(stream_groups(items, self.workers), group_done)

    def _upload_stream(
        self, group: list[Transfer], mtimes: list[int], moved: Moved, restart: bool
    ) -> list[tuple[Transfer, str]]:
        chan, reader, first = self._stream_open(upload_request(self.remote.base_dir, group, mtimes, restart))
        try:
            raw = first.get("offsets")
            if not isinstance(raw, list) or len(raw) != len(group):
                raise StreamBroken("the remote upload stream sent no offsets")
            offsets = [_int(o, "offset") for o in raw]
            if any(o > i.size for o, i in zip(offsets, group, strict=True)):
                raise StreamBroken("the remote upload stream kept more bytes than the file has")
            with self._lock:
                self.stats.resumed += sum(1 for o in offsets if o)
            limit = LINE_MAX + PER_FILE_MAX * len(group)
            try:
                send_files(chan, group, offsets, moved)
            except (EOFError, OSError):  # the agent stopped reading: its last line says why
                answer(reader.answer(limit), "upload", self.label)
                raise
            chan.shutdown_write()
            shas = answer(reader.answer(limit), "upload", self.label).get("result", {}).get("files")
            if not isinstance(shas, list) or len(shas) != len(group):
                raise StreamBroken("the remote upload stream sent no hashes")
        finally:
            chan.close()
        return [(i, str(sha)) for i, sha in zip(group, shas, strict=True) if sha != i.sha256]

    def stream_download(self, items: Sequence[Transfer], progress: ProgressFn | None) -> None:
        """Remote -> local by `send` streams; a resumed file failing its hash is fetched again
        from byte 0 once; a full copy failing it raises VerificationError."""
        moved = self._moved("bytes_down", progress)

        def group_done(group: list[Transfer]) -> None:
            what = f"{len(group)} file(s)" if len(group) > 1 else group[0].remote
            redo = self._retry(lambda: self._download_stream(group, moved, False), what="download", path=what)
            if redo:
                self._retry(lambda: self._download_stream(redo, moved, True), what="download", path=what)

        self._run_batch(stream_groups(items, self.workers), group_done)

    def _download_stream(self, group: list[Transfer], moved: Moved, restart: bool) -> list[Transfer]:
        offsets = []
        for item in group:
            local = Path(item.local)
            have = 0 if restart or not local.is_file() else local.stat().st_size
            offsets.append(have if have <= item.size else 0)
        files = [[i.remote, o] for i, o in zip(group, offsets, strict=True)]
        chan, reader, _first = self._stream_open({"op": "send", "base": self.remote.base_dir, "files": files})
        try:
            redo, bad, resumed = receive_files(reader, group, offsets, moved, self.label)
            with self._lock:
                self.stats.resumed += resumed
            answer(reader.line(), "download", self.label)
        finally:
            chan.close()
        if bad:
            item, digest = bad[0]
            raise VerificationError(
                f"Downloaded {item.remote} does not match: sha256 {digest} != expected {item.sha256} "
                f"(from {self.label})."
            )
        if redo and restart:
            raise VerificationError(f"Downloaded {redo[0].remote} does not match (from {self.label}).")
        return redo
