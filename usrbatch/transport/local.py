"""The local transport: the "remote" is a directory on this machine or a shared filesystem.

Same contract as the SSH transport, so the engine runs the same code path in tests and on a
laptop: one inventory call (the agent, in-process), streamed copies that resume a partial
destination and check the final sha256, one `apply` of renames and removals, and a lease that is
an flock held by this process for the duration of the context.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from usrbatch.agent import client
from usrbatch.agent import remote as agent
from usrbatch.auditlog import get_logger
from usrbatch.errors import TransferError, VerificationError
from usrbatch.transport.base import (
    EventLockMode,
    FileStat,
    Inventory,
    ProgressFn,
    Transfer,
    validate_relpath,
)

CHUNK = 1024 * 1024
ATTEMPTS = 2  # a sha mismatch after resuming is retried once from scratch


@dataclass
class LocalLease:
    """A held local lease; alive until its context exits."""

    token: str
    held: bool = field(default=True)
    inventory: Inventory | None = None  # the dataset under the lock, when the lease asked for it

    def alive(self) -> bool:
        return self.held


class LocalTransport:
    """Transport to `base_dir` on this machine."""

    def __init__(self, base_dir: Path, *, cache_dir: Path | None = None) -> None:
        self.base_dir = Path(base_dir).expanduser().absolute()
        self._cache_dir = cache_dir

    @property
    def label(self) -> str:
        return f"local:{self.base_dir}"

    def _abs(self, rel: str, what: str = "local transport") -> Path:
        """base_dir/rel, contained like the ssh remote: base_dir must exist and rel's existing
        parent chain must not lead out of it through a symlink (TransferError otherwise)."""
        safe = validate_relpath(rel, what=what)
        try:
            return Path(agent.resolve_under(str(self.base_dir), safe, what))
        except agent.AgentError as exc:
            raise TransferError(f"{what} on {self.label} refused: {exc}") from None

    def _makedirs(self, directory: Path) -> None:
        """Create `directory` under base_dir, never outside it (agent.makedirs_inside)."""
        try:
            agent.makedirs_inside(str(self.base_dir), str(directory))
        except agent.AgentError as exc:
            raise TransferError(f"mkdir on {self.label} refused: {exc}") from None

    # -- inventory ---------------------------------------------------------------------------
    def inventory(self, rel_dir: str, *, hashes: bool = True, parquet_stats: bool = False) -> Inventory:
        """The agent's `inventory` op in-process (client.run_local)."""
        target = self._abs(rel_dir, "dataset dir")
        request = client.inventory_request(
            str(self.base_dir), rel_dir, hashes=hashes, parquet_stats=parquet_stats
        )
        return Inventory.from_agent(
            client.run_local(request, label=self.label, cache_path=self._cache_path(target))
        )

    def _cache_path(self, target: Path) -> str | None:
        if self._cache_dir is None:
            return None
        key = hashlib.sha256(str(target).encode("utf-8", "surrogateescape")).hexdigest()[:32]
        return str(self._cache_dir / f"{key}.json")

    # -- copies ------------------------------------------------------------------------------
    def download(self, items: Sequence[Transfer], *, progress: ProgressFn | None = None) -> None:
        for item in items:
            _copy_verified(self._abs(item.remote), Path(item.local), item, progress, label=item.remote)

    def upload(self, items: Sequence[Transfer], *, progress: ProgressFn | None = None) -> None:
        for item in items:
            if "/" not in validate_relpath(item.remote, what="remote path"):
                self.base_dir.mkdir(parents=True, exist_ok=True)  # FILE mode, as ssh: mkdir -p base_dir
            dst = self._abs(item.remote, "remote path")
            self._makedirs(dst.parent)
            _copy_verified(Path(item.local), dst, item, progress, label=item.remote)

    # -- apply -------------------------------------------------------------------------------
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
        """The agent's `apply` op in-process (client.run_local): every path validated before
        anything changes; `verify` hashes the listed files first, `payload` validates them,
        `snapshot` copies the primary a rename replaces; `inventory` returns the post-apply
        inventory."""
        request = client.apply_request(
            str(self.base_dir),
            renames,
            removals,
            verify=verify,
            payload=payload,
            snapshot=snapshot,
            inventory=inventory,
            parquet_stats=parquet_stats,
        )
        if request is None:
            return None
        cache = self._cache_path(self._abs(inventory, "dataset dir")) if inventory is not None else None
        out = client.run_local(request, label=self.label, cache_path=cache)
        return Inventory.from_agent(out["inventory"]) if inventory is not None else None

    # -- stat_file ---------------------------------------------------------------------------
    def stat_file(self, rel: str, *, hashes: bool = True, parquet_stats: bool = False) -> FileStat:
        """The agent's `stat` op in-process (FILE mode)."""
        request = client.stat_request(str(self.base_dir), rel, hashes=hashes, parquet_stats=parquet_stats)
        target = self.base_dir / request["rel"]  # the agent's stat_path keeps it inside base_dir
        return FileStat.from_agent(
            client.run_local(request, label=self.label, cache_path=self._cache_path(target.parent))
        )

    # -- lease -------------------------------------------------------------------------------
    @contextmanager
    def lease(
        self,
        rel_dir: str,
        *,
        timeout: float = 300.0,
        events: EventLockMode = "none",
        inventory: bool = False,
        parquet_stats: bool = False,
    ) -> Iterator[LocalLease]:
        """The agent's dataset lock, held by this process until the context exits; with
        `inventory` the locked dataset's inventory is taken once the lock is held."""
        target = self._abs(rel_dir, "dataset dir")
        lock = agent.hold_lock(str(target), timeout, events, base=str(self.base_dir))
        try:
            lock.acquire()
        except agent.AgentError as exc:
            raise TransferError(
                f"Remote dataset lock for '{rel_dir}' on {self.label} refused: {exc}"
            ) from None
        except agent.LockTimeout as exc:
            what = "event-log lock" if exc.which == "events" else "dataset lock"
            raise TransferError(
                f"Remote {what} for '{rel_dir}' timeout on {self.label} after {timeout:g} seconds",
                hint="Another sync holds the dataset; retry later or raise --lock-timeout.",
            ) from None
        lease = LocalLease(token=lock.token)
        try:
            if inventory:
                lease.inventory = self.inventory(rel_dir, parquet_stats=parquet_stats)
            yield lease
        finally:
            lease.held = False
            lock.release()

    def close(self) -> None:
        return None


def _open_source(path: Path, label: str):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise TransferError(f"Source file is missing: {label}") from None
    except OSError as exc:
        raise TransferError(f"Cannot read {label}: {exc.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise TransferError(f"Source is not a regular file: {label}")
    return os.fdopen(fd, "rb"), st


def _copy_verified(src: Path, dst: Path, item: Transfer, progress: ProgressFn | None, *, label: str) -> None:
    """Stream src → dst, resuming a shorter partial dst; the final sha256 decides (one retry)."""
    log = get_logger()
    dst.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, ATTEMPTS + 1):
        fin, st = _open_source(src, label)
        with fin:
            digest = hashlib.sha256()
            flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW
            try:
                fd = os.open(dst, flags, 0o666)  # the umask decides, as for every dataset file
            except OSError as exc:
                raise TransferError(f"Cannot write {dst}: {exc.strerror}") from None
            with os.fdopen(fd, "r+b") as fout:
                have = os.fstat(fout.fileno()).st_size
                offset = have if attempt == 1 and 0 < have <= st.st_size else 0
                if offset:
                    # Resume: the bytes already there count toward the final hash.
                    while fout.tell() < offset:
                        block = fout.read(min(CHUNK, offset - fout.tell()))
                        if not block:
                            break
                        digest.update(block)
                    fin.seek(offset)
                fout.seek(offset)
                fout.truncate(offset)
                while True:
                    block = fin.read(CHUNK)
                    if not block:
                        break
                    fout.write(block)
                    digest.update(block)
                    if progress is not None:
                        progress(label, len(block))
                fout.flush()
                os.fsync(fout.fileno())
        os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
        got = digest.hexdigest()
        if got == item.sha256:
            return
        log.info("sync.retry", path=label, attempt=attempt, error="sha256 mismatch")
    raise VerificationError(f"sha256 mismatch after transfer of {label}: expected {item.sha256}, got {got}")
