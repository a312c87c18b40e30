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
        target = self._abs(rel_dir, "dataset dir")
        data = agent.inventory(str(target), hashes, parquet_stats, self._cache_path(target))
        return Inventory.from_agent(data)

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
        """The agent's `apply` op in-process: every path validated before anything changes;
        `verify` hashes the listed files first, `payload` validates them, `snapshot` copies the
        primary a rename replaces; `inventory` returns the post-apply inventory."""
        rels = {validate_relpath(p, what="verify path"): str(sha) for p, sha in (verify or {}).items()}
        kinds = {validate_relpath(p, what="payload path"): str(k) for p, k in (payload or {}).items()}
        snap = [validate_relpath(p, what="snapshot path") for p in snapshot] if snapshot else None
        inv_rel = validate_relpath(inventory, what="dataset dir") if inventory is not None else None
        try:
            out = agent.apply_changes(
                str(self.base_dir),
                [list(p) for p in renames],
                list(removals),
                rels,
                inv_rel,
                parquet_stats,
                self._cache_path(self._abs(inv_rel, "dataset dir")) if inv_rel is not None else None,
                payload=kinds or None,
                snapshot=snap,
            )
        except agent.VerifyMismatch as exc:
            raise VerificationError(f"{str(exc)[:1].upper()}{str(exc)[1:]} on {self.label}.") from None
        except agent.PayloadInvalid as exc:
            raise VerificationError(f"{exc} ({self.label})", hint=exc.hint) from None
        except agent.AgentError as exc:
            raise TransferError(f"apply on {self.label} refused: {exc}") from None
        return Inventory.from_agent(out["inventory"]) if "inventory" in out else None

    # -- stat_file ---------------------------------------------------------------------------
    def stat_file(self, rel: str, *, hashes: bool = True, parquet_stats: bool = False) -> FileStat:
        """The agent's `stat` op in-process (FILE mode)."""
        target = self.base_dir / validate_relpath(rel, what="stat path")  # stat_path contains it
        try:
            data = agent.stat_path(
                str(self.base_dir),
                validate_relpath(rel, what="stat path"),
                hashes,
                parquet_stats,
                self._cache_path(target.parent),
            )
        except agent.AgentError as exc:
            raise TransferError(f"stat on {self.label} refused: {exc}") from None
        except OSError as exc:
            raise TransferError(f"Cannot stat {target}: {exc.strerror or exc}") from None
        return FileStat.from_agent(data)

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
