"""Pull staging and promotion: `<root>/.usr-pull-<ds with / → __>-<random>/` holds ONLY the
changed files; promotion renames them into the dataset dir (same filesystem, atomic per file),
guided by a journal written before the first rename, so an interrupted promotion is rolled
forward by the next run instead of leaving a half-updated dataset.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from usrbatch.dataset.layout import EVENTS, RECORDS, is_runtime
from usrbatch.errors import TransferError, VerificationError
from usrbatch.transport import agent
from usrbatch.transport.base import FileEntry

JOURNAL = ".usr-promotion.json"
JOURNAL_VERSION = 1
CHUNK = 1024 * 1024


def staging_prefix(dataset_id: str) -> str:
    return f".usr-pull-{dataset_id.replace('/', '__')}-"


def create_staging(root: Path, dataset_id: str) -> Path:
    """A fresh staging dir at the datasets root (same filesystem as the dataset)."""
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=staging_prefix(dataset_id), dir=root))


def staging_dirs(root: Path, dataset_id: str) -> list[Path]:
    """Leftover staging dirs of this dataset (from interrupted runs)."""
    if not root.is_dir():
        return []
    prefix = staging_prefix(dataset_id)
    out = []
    for entry in root.iterdir():
        # mkdtemp suffixes never contain '-': this keeps `demo` from matching `demo-x` dirs.
        if entry.name.startswith(prefix) and "-" not in entry.name[len(prefix) :] and entry.is_dir():
            out.append(entry)
    return sorted(out)


def prepare_staging(root: Path, dataset_id: str, wanted: Iterable[FileEntry]) -> tuple[Path, int]:
    """A staging dir for a new pull attempt: the newest one an interrupted download left behind
    (no journal), pruned to the files still wanted so transports resume them, else a new one.
    Other abandoned staging dirs of the dataset are removed. Call under the local dataset lock.

    Returns (dir, bytes already staged)."""
    by_path = {e.path: e for e in wanted}
    resumable = [d for d in staging_dirs(root, dataset_id) if not (d / JOURNAL).exists()]
    resumable.sort(key=lambda d: d.stat().st_mtime_ns)
    keep = resumable.pop() if resumable else None
    for stale in resumable:
        remove_staging(stale)
    if keep is None:
        return create_staging(root, dataset_id), 0
    have = 0
    for dirpath, _dirs, files in os.walk(keep):
        for name in files:
            path = Path(dirpath) / name
            rel = path.relative_to(keep).as_posix()
            st = os.lstat(path)
            entry = by_path.get(rel)
            if entry is None or not stat.S_ISREG(st.st_mode) or st.st_size > entry.size:
                path.unlink()
            else:
                have += st.st_size
    return keep, have


def remove_staging(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def walk_staged(
    staging: Path,
    verified: Mapping[str, FileEntry] | None = None,
    inodes: dict[str, int] | None = None,
) -> dict[str, FileEntry]:
    """Every staged regular file with its sha256. A symlink or special entry anywhere raises
    VerificationError before any destination write (§4 step 13).

    `verified` holds the entries the transport has just downloaded: its download already checked
    each one's sha256 (it raises otherwise), and stamp_mtimes gave it the entry's mtime. Such a file
    is NOT re-read when a fresh lstat still shows that size and mtime; any other file, or one whose
    stat differs, is hashed from disk. `inodes`, when given, receives each file's inode (for
    remember_promoted)."""
    files: dict[str, FileEntry] = {}
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        with os.scandir(staging / rel_dir if rel_dir else staging) as it:
            entries = list(it)
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            if rel == JOURNAL:
                continue
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                raise VerificationError(f"Staged pull payload contains symlink entry: {rel}")
            if stat.S_ISDIR(st.st_mode):
                stack.append(rel)
            elif stat.S_ISREG(st.st_mode):
                known = verified.get(rel) if verified else None
                if known and known.sha256 and (known.size, known.mtime_ns) == (st.st_size, st.st_mtime_ns):
                    sha = known.sha256
                else:
                    sha = _sha256(Path(entry.path))
                files[rel] = FileEntry(rel, st.st_size, st.st_mtime_ns, sha)
                if inodes is not None:
                    inodes[rel] = st.st_ino
            elif rel == RECORDS:
                raise VerificationError(f"Staged pull payload contains unsupported records entry: {rel}")
            elif rel == EVENTS:
                raise VerificationError(f"Staged pull payload contains unsupported event-log entry: {rel}")
            else:
                raise VerificationError(f"Staged pull payload contains unsupported entry type: {rel}")
    return files


def remember_promoted(dataset_dir: Path, staged: Mapping[str, FileEntry], inodes: Mapping[str, int]) -> int:
    """After promotion: put each promoted file's verified sha256 into the LOCAL hash cache under a
    fresh lstat key (the rename changed its path and ctime), so the next local inventory reads
    none of them. A file whose inode, size or mtime no longer match the staged one is skipped.
    Returns the number of entries recorded."""
    entries = {}
    for rel, entry in staged.items():
        try:
            st = os.lstat(Path(dataset_dir) / rel)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and (st.st_ino, st.st_size, st.st_mtime_ns) == (
            inodes.get(rel),
            entry.size,
            entry.mtime_ns,
        ):
            entries[rel] = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, entry.sha256]
    agent.remember_hashes(str(Path(dataset_dir).absolute()), entries)
    return len(entries)


def stamp_mtimes(staging: Path, entries: Iterable[FileEntry]) -> None:
    """Give each staged regular file the mtime the source inventory reported (symlinks untouched)."""
    for entry in entries:
        path = staging / entry.path
        try:
            if stat.S_ISREG(os.lstat(path).st_mode):
                os.utime(path, ns=(entry.mtime_ns, entry.mtime_ns), follow_symlinks=False)
        except FileNotFoundError:
            continue


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_journal(staging: Path, dataset_dir: Path, install: list[str], delete: list[str]) -> Path:
    """Durably record the promotion before the first rename; the event log goes last."""
    install = sorted(install, key=lambda p: (p == EVENTS, p))
    delete = sorted(d for d in delete if not is_runtime(d))
    body = {
        "version": JOURNAL_VERSION,
        "dataset_dir": str(dataset_dir),
        "install": install,
        "delete": delete,
    }
    tmp = staging / (JOURNAL + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(body, fh, separators=(",", ":"))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, staging / JOURNAL)
    _fsync_dir(staging)
    return staging / JOURNAL


def _prune_empty(directory: Path, stop: Path) -> None:
    while directory != stop and stop in directory.parents:
        try:
            directory.rmdir()
        except OSError:
            return
        directory = directory.parent


def roll_forward(staging: Path) -> tuple[int, int]:
    """Complete the promotion a journal describes (idempotent); remove staging afterwards.

    Returns (installed, deleted). Raises TransferError when a staged file is gone and its target
    is missing too (the journal cannot be completed)."""
    with open(staging / JOURNAL, encoding="utf-8") as fh:
        body = json.load(fh)
    if body.get("version") != JOURNAL_VERSION:
        raise TransferError(f"Unknown promotion journal version in {staging}.")
    dest = Path(body["dataset_dir"])
    installed = deleted = 0
    for rel in body["install"]:
        src, dst = staging / rel, dest / rel
        if os.path.lexists(src):
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
            installed += 1
        elif not os.path.lexists(dst):
            raise TransferError(
                f"Interrupted promotion cannot be completed: staged {rel} and its target are both missing.",
                hint=f"Inspect {staging}, then remove it and pull again.",
            )
    for rel in body["delete"]:
        path = dest / rel
        try:
            path.unlink()
            deleted += 1
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            continue
        _prune_empty(path.parent, dest)
    _fsync_dir(dest)
    (staging / JOURNAL).unlink(missing_ok=True)
    remove_staging(staging)
    return installed, deleted


def journal_dataset_dir(staging: Path) -> Path | None:
    """The dataset dir a staging dir's journal promotes into (None without a readable journal)."""
    try:
        with open(staging / JOURNAL, encoding="utf-8") as fh:
            return Path(json.load(fh)["dataset_dir"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def pending_journals(root: Path, dataset_id: str, dataset_dir: Path) -> list[Path]:
    """Staging dirs whose promotion into `dataset_dir` was interrupted."""
    return [d for d in staging_dirs(root, dataset_id) if journal_dataset_dir(d) == Path(dataset_dir)]
