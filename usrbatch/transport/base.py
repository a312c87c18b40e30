"""The Transport protocol: the few operations the sync engine needs from the other side.

The engine never knows whether it talks to a directory on this machine (`local.py`) or a host over
SSH (`ssh.py`). All remote paths are POSIX paths RELATIVE to the remote's base_dir (for example
`densegen/demo/_derived/infer/part-1.parquet`); implementations validate them (no absolute paths,
no `..`, no empty components) and quote them for any shell they reach.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

# The agent's typed answers and the relative-path rule live in usrbatch/agent/answers.py (one
# definition); the engine and the transports keep importing them from here.
from usrbatch.agent.answers import (  # noqa: F401
    FILE_KINDS,
    FileEntry,
    FileKind,
    FileStat,
    Inventory,
    validate_relpath,
)


@dataclass(frozen=True)
class Transfer:
    """One file to move. `remote` is relative to base_dir; `local` is absolute on this machine.

    Downloads write `local` (resuming a partial file found there); uploads write `remote`, which
    the engine sets to a temporary name beside the target. `sha256` is the expected final hash:
    the transport checks it and raises VerificationError on a mismatch after its retries.
    """

    remote: str
    local: Path
    size: int
    sha256: str


ProgressFn = Callable[[str, int], None]  # (relpath, bytes just moved)
EventLockMode = Literal["none", "shared", "exclusive"]


class Lease(Protocol):
    """A held remote dataset lock; `alive()` is False once the connection or holder died.
    `inventory` is the dataset's inventory taken under the lock when the lease asked for it."""

    token: str
    inventory: Inventory | None

    def alive(self) -> bool: ...


@runtime_checkable
class Transport(Protocol):
    """What a remote offers the engine. Each method is one round trip unless it says otherwise."""

    @property
    def label(self) -> str:
        """Human-readable target, e.g. `local:/data/usr` or `alice@scc1.bu.edu:/proj/usr`."""
        ...

    def inventory(self, rel_dir: str, *, hashes: bool = True, parquet_stats: bool = False) -> Inventory:
        """Inventory of `<base_dir>/<rel_dir>` (exists=False when absent)."""
        ...

    def download(self, items: Sequence[Transfer], *, progress: ProgressFn | None = None) -> None:
        """Copy remote files to local paths; resumable; verifies each sha256."""
        ...

    def upload(self, items: Sequence[Transfer], *, progress: ProgressFn | None = None) -> None:
        """Copy local files to remote paths (parents created); resumable. No extra round trip:
        the remote sha256 of an upload is checked by `apply(..., verify=...)` (a transport may
        check a RESUMED file itself, since it can redo that one from byte 0)."""
        ...

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
        """In one round trip: when `verify` ({path: sha256}) is given, hash those remote files
        first and, on any mismatch, remove them all, change nothing else and raise
        VerificationError naming the file; when `payload` ({path: kind}, kinds as
        agent.PAYLOAD_KINDS) is given, validate those files likewise (`post-push-payload`);
        with `snapshot` (src, dst) copy src to the snapshot name dst before any rename (nothing
        when src is missing); then rename each (src, dst) into place, creating
        parents and replacing dst atomically; then remove each path in `removals` and prune
        directories left empty. With `inventory` (a dataset dir) return its post-apply
        Inventory from the same round trip (`parquet_stats` as for `inventory()`), else None."""
        ...

    def stat_file(self, rel: str, *, hashes: bool = True, parquet_stats: bool = False) -> FileStat:
        """What `<base_dir>/<rel>` is (FILE mode), never following a symlink: kind, and for a
        regular file its size, mtime and (with `hashes`) sha256, plus rows/cols with
        `parquet_stats`. Raises TransferError when rel's parent chain leaves base_dir."""
        ...

    def lease(
        self,
        rel_dir: str,
        *,
        timeout: float = 300.0,
        events: EventLockMode = "none",
        inventory: bool = False,
        parquet_stats: bool = False,
    ) -> AbstractContextManager[Lease]:
        """Hold `<rel_dir>/.usr.lock` (creating rel_dir), plus `.events.lock` in `events` mode,
        for the duration of the context. Raises TransferError on timeout. With `inventory`, the
        dataset is inventoried (every file hashed; `parquet_stats` as for `inventory()`) once
        the lock is held, in the same round trip, into `lease.inventory`."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


def iter_chunks(fh, size: int = 1024 * 1024) -> Iterator[bytes]:
    """Yield blocks of a binary file object (bounded memory)."""
    while True:
        block = fh.read(size)
        if not block:
            return
        yield block
