"""A threaded localhost TCP proxy that can cut a connection after N bytes (connection-drop tests).

with TcpProxy("127.0.0.1", sshd_port) as proxy:
    proxy.cut_after(5_000_000)   # the NEXT connection(s) relaying that many bytes are cut once
    ... connect to 127.0.0.1:proxy.port ...
    assert proxy.cuts == 1
"""

from __future__ import annotations

import contextlib
import socket
import threading


class TcpProxy:
    """Relay 127.0.0.1:<port> ↔ target; `cut_after(n)` arms a one-shot cut of the live connection."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._cut_at: int | None = None
        self._relayed = 0
        self._conns: list[tuple[socket.socket, socket.socket]] = []
        self._closing = False
        self._down = False
        self.connections = 0
        self.cuts = 0
        self.bytes_relayed = 0  # both directions, every connection (sizes a drill's cut offsets)
        self._thread = threading.Thread(target=self._accept_loop, name="tcp-proxy", daemon=True)
        self._thread.start()

    def cut_after(self, nbytes: int) -> None:
        """Cut every open connection once `nbytes` more bytes have been relayed (one shot)."""
        with self._lock:
            self._relayed = 0
            self._cut_at = nbytes

    def go_down(self) -> None:
        """A dead link: cut every live connection now and refuse new ones from here on."""
        with self._lock:
            self._down = True
            conns = list(self._conns)
        for a, b in conns:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def disarm(self) -> None:
        """Cancel a cut that has not happened yet."""
        with self._lock:
            self._cut_at = None

    def _accept_loop(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._down:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self.connections += 1
                self._conns.append((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst, client, upstream), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                cut = False
                with self._lock:
                    self.bytes_relayed += len(data)
                    if self._cut_at is not None:
                        self._relayed += len(data)
                        if self._relayed >= self._cut_at:
                            self._cut_at = None
                            self.cuts += 1
                            cut = True
                if cut:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    s.close()

    def close(self) -> None:
        self._closing = True
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for a, b in conns:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.close()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
