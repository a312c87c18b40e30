"""A TCP proxy on 127.0.0.1 that delays every byte by a fixed time in each direction.

    with DelayProxy("127.0.0.1", sshd_port, one_way_s=0.010) as proxy:   # ~20 ms round trip
        ... connect to 127.0.0.1:proxy.port ...

Each direction of each connection has a reader thread (stamps every chunk with "deliver at
now + one_way_s") and a writer thread (sleeps until then, sends). The queue between them is bounded
(`max_in_flight` bytes per direction, like a link's buffer): a full queue stops the reader, so TCP
flow control slows the sender instead of the proxy growing without bound. Listens on 127.0.0.1 only.
The relay runs in this Python process: on the loopback it moves a few hundred MB/s, which both the
usrbatch run and its peer go through alike (bench_b.py reports both through the same proxy).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import deque

CHUNK = 256 * 1024


class _Pipe:
    """One direction: a bounded FIFO of (deliver_at, bytes)."""

    def __init__(self, max_in_flight: int) -> None:
        self.items: deque[tuple[float, bytes]] = deque()
        self.size = 0
        self.max = max_in_flight
        self.eof = False
        self.cond = threading.Condition()

    def put(self, deliver_at: float, data: bytes) -> None:
        with self.cond:
            while self.size >= self.max and not self.eof:
                self.cond.wait(0.5)
            self.items.append((deliver_at, data))
            self.size += len(data)
            self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            self.eof = True
            self.cond.notify_all()

    def get(self) -> tuple[float, bytes] | None:
        with self.cond:
            while not self.items:
                if self.eof:
                    return None
                self.cond.wait(0.5)
            item = self.items.popleft()
            self.size -= len(item[1])
            self.cond.notify_all()
            return item


class DelayProxy:
    """Relay 127.0.0.1:<port> -> target with `one_way_s` added in each direction."""

    def __init__(
        self, target_host: str, target_port: int, one_way_s: float = 0.010, max_in_flight: int = 8 << 20
    ) -> None:
        self.target = (target_host, target_port)
        self.one_way_s = one_way_s
        self.max_in_flight = max_in_flight
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port: int = self._listener.getsockname()[1]
        self._closing = False
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self.connections = 0
        threading.Thread(target=self._accept_loop, name="delay-proxy", daemon=True).start()

    def _accept_loop(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self.connections += 1
                self._socks += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                pipe = _Pipe(self.max_in_flight)
                threading.Thread(target=self._read, args=(src, dst, pipe), daemon=True).start()
                threading.Thread(target=self._write, args=(dst, pipe), daemon=True).start()

    def _read(self, src: socket.socket, dst: socket.socket, pipe: _Pipe) -> None:
        try:
            while data := src.recv(CHUNK):
                pipe.put(time.monotonic() + self.one_way_s, data)
        except OSError:
            pass
        finally:
            pipe.close()

    def _write(self, dst: socket.socket, pipe: _Pipe) -> None:
        try:
            while (item := pipe.get()) is not None:
                wait = item[0] - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                dst.sendall(item[1])
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)  # half-close: the other direction drains on its own

    def close(self) -> None:
        self._closing = True
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            with contextlib.suppress(OSError):
                s.close()

    def __enter__(self) -> DelayProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
