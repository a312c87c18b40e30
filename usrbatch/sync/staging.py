"""Pull staging and promotion: `<root>/.usr-pull-<ds with / → __>-<random>/` holds ONLY the
changed files; promotion renames them into the dataset dir (same filesystem, atomic per file),
guided by a journal written before the first rename, so an interrupted promotion is rolled
forward by the next run instead of leaving a half-updated dataset.

Why over ~400 lines: the journal, its path checks and the roll-forward are one crash-safety
protocol; split, no file would show what an interrupted promotion relies on.

The journal lives BESIDE the staging dir (`<staging>.promotion.json`), never inside it: staged
names come from the remote, so none of them can be read as the journal. Every path a journal
names is checked (relative, no `..`, no reserved name, no symlink on the way) before any rename or
delete, and the journal records each target's state before promotion: a roll-forward that finds
a file changed since (a local write after the interruption) refuses instead of overwriting it.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from usrbatch.agent import remote as agent
from usrbatch.dataset.layout import EVENTS, RECORDS, is_reserved, is_runtime
from usrbatch.dataset.pending import journal_for, promotions_at, same_dir, staging_prefix
from usrbatch.errors import TransferError, VerificationError
from usrbatch.files import atomic_write_bytes, fsync_dir, prune_empty, sha256_file
from usrbatch.transport.base import FileEntry, validate_relpath

JOURNAL_VERSION = 2


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
        # mkdtemp suffixes never contain '-' or '.': `demo` never matches `demo-x` dirs.
        suffix = entry.name[len(prefix) :]
        if entry.name.startswith(prefix) and "-" not in suffix and "." not in suffix and entry.is_dir():
            out.append(entry)
    return sorted(out)


def prepare_staging(root: Path, dataset_id: str, wanted: Iterable[FileEntry]) -> tuple[Path, int]:
    """A staging dir for a new pull attempt: the newest one an interrupted download left behind
    (no journal), pruned to the files still wanted so transports resume them, else a new one.
    Other abandoned staging dirs of the dataset are removed. Call under the local dataset lock.

    Returns (dir, bytes already staged)."""
    by_path = {e.path: e for e in wanted}
    resumable = [d for d in staging_dirs(root, dataset_id) if not os.path.lexists(journal_for(d))]
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
            if entry is None or is_reserved(rel) or not stat.S_ISREG(st.st_mode) or st.st_size > entry.size:
                path.unlink()
            else:
                have += st.st_size
    return keep, have


def remove_staging(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


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
                    sha = sha256_file(Path(entry.path), follow_symlinks=False)
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


# -- the promotion journal ---------------------------------------------------------------------


@dataclass(frozen=True)
class FileState:
    """A regular file as the journal saw it (fast match on size/mtime/inode, else sha256)."""

    size: int
    mtime_ns: int
    ino: int
    sha256: str

    @classmethod
    def of(cls, path: Path, known: FileEntry | None = None) -> FileState | None:
        """The state of `path` (None when absent). `known` supplies the sha256 when its size and
        mtime still match; otherwise the file is hashed. Raises TransferError for a non-file."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(st.st_mode):
            raise TransferError(
                f"Pull promotion target {path} is not a regular file.",
                hint="Move it aside (sync replaces regular files only), then pull again.",
            )
        if (
            known is not None
            and known.sha256
            and (known.size, known.mtime_ns) == (st.st_size, st.st_mtime_ns)
        ):
            sha = known.sha256
        else:
            sha = sha256_file(path, follow_symlinks=False)
        return cls(st.st_size, st.st_mtime_ns, st.st_ino, sha)

    def to_json(self) -> list:
        return [self.size, self.mtime_ns, self.ino, self.sha256]


def _matches(path: Path, state: FileState | None) -> bool:
    """Whether `path` still holds `state` (None: still absent)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return state is None
    if state is None or not stat.S_ISREG(st.st_mode) or st.st_size != state.size:
        return False
    if (st.st_mtime_ns, st.st_ino) == (state.mtime_ns, state.ino):
        return True
    return sha256_file(path, follow_symlinks=False) == state.sha256


@dataclass(frozen=True)
class JournalEntry:
    path: str  # relative to the dataset dir (and to the staging dir for installs)
    before: FileState | None  # the dataset's file when the journal was written (None: absent)
    after: FileState | None = None  # installs: the staged file that replaces it


@dataclass(frozen=True)
class Journal:
    """A parsed, path-checked promotion journal."""

    file: Path
    staging: Path
    dataset_dir: Path
    dataset_id: str
    remote: str
    install: tuple[JournalEntry, ...]
    delete: tuple[JournalEntry, ...]
    watch: tuple[JournalEntry, ...]  # files promotion leaves alone but a local write changes


def _check_rel(rel: object, where: Path) -> str:
    """A journal path: relative, no `..`/`.`/empty parts, not one of our reserved names."""
    if not isinstance(rel, str):
        raise TransferError(f"Promotion journal {where} names a non-string path: {rel!r}.")
    clean = validate_relpath(rel, what=f"Promotion journal {where}")
    if clean != rel or is_reserved(rel):
        raise TransferError(f"Promotion journal {where} names a reserved or non-canonical path {rel!r}.")
    return rel


def _checked_path(base: Path, rel: str, *, create_parents: bool = False) -> Path:
    """base/rel after checking that no existing component on the way is a symlink or a non-dir
    (missing parents are created with `create_parents`). Raises TransferError."""
    current = base
    for part in rel.split("/")[:-1]:
        current = current / part
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            if not create_parents:
                return base / rel
            os.mkdir(current)
            continue
        if not stat.S_ISDIR(st.st_mode):
            kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a directory"
            raise TransferError(
                f"Pull promotion refused: {current} (on the way to {rel}) is {kind}.",
                hint=f"Sync never follows links; replace {current} with a directory or remove it, then pull again.",
            )
    return base / rel


def write_journal(
    staging: Path,
    dataset_dir: Path,
    install: Iterable[str],
    delete: Iterable[str],
    *,
    dataset_id: str = "",
    remote: str = "",
    known: Mapping[str, FileEntry] | None = None,
    staged: Mapping[str, FileEntry] | None = None,
) -> Path:
    """Durably record the promotion before the first rename (the event log goes last): every path,
    each target's state now (`known` entries of the local inventory spare re-hashing) and each
    staged file's state. Raises TransferError for an unsafe path or a non-file target."""
    dataset_dir = Path(os.path.abspath(dataset_dir))
    known = known or {}
    staged = staged or {}
    install = sorted(set(install), key=lambda p: (p == EVENTS, p))
    delete = sorted({d for d in delete if not is_runtime(d)} - set(install), key=lambda p: (p == EVENTS, p))
    journal = journal_for(staging)

    def before(rel: str) -> list | None:
        _check_rel(rel, journal)
        state = FileState.of(_checked_path(dataset_dir, rel), known.get(rel))
        return state.to_json() if state else None

    def after(rel: str) -> list:
        state = FileState.of(_checked_path(staging, rel), staged.get(rel))
        if state is None:
            raise TransferError(f"Staged file {rel} is missing from {staging}; pull again.")
        return state.to_json()

    body = {
        "version": JOURNAL_VERSION,
        "dataset_dir": str(dataset_dir),
        "dataset": dataset_id,
        "remote": remote,
        "install": [[rel, before(rel), after(rel)] for rel in install],
        "delete": [[rel, before(rel)] for rel in delete],
        "watch": [[EVENTS, before(EVENTS)]] if EVENTS not in install and EVENTS not in delete else [],
    }
    atomic_write_bytes(journal, json.dumps(body, separators=(",", ":")).encode("utf-8"))
    return journal


def _state(raw: object, where: Path) -> FileState | None:
    if raw is None:
        return None
    if (
        isinstance(raw, list)
        and len(raw) == 4
        and all(isinstance(v, int) and not isinstance(v, bool) for v in raw[:3])
        and isinstance(raw[3], str)
    ):
        return FileState(*raw)
    raise TransferError(f"Promotion journal {where} holds a malformed file state: {raw!r}.")


def _entries(body: dict, key: str, where: Path) -> tuple[JournalEntry, ...]:
    raw = body.get(key)
    if not isinstance(raw, list):
        raise TransferError(f"Promotion journal {where}: '{key}' is not a list.")
    out = []
    for item in raw:
        if not isinstance(item, list) or len(item) not in (2, 3):
            raise TransferError(f"Promotion journal {where}: malformed '{key}' entry {item!r}.")
        rel = _check_rel(item[0], where)
        out.append(
            JournalEntry(rel, _state(item[1], where), _state(item[2], where) if len(item) == 3 else None)
        )
    if key == "install" and any(e.after is None for e in out):
        raise TransferError(f"Promotion journal {where}: an install entry lacks its staged state.")
    return tuple(out)


def read_journal(staging: Path, dataset_dir: Path) -> Journal:
    """Parse the journal of `staging` and check it promotes into `dataset_dir` and names only
    safe paths. Raises TransferError (naming the journal and how to get rid of it) otherwise."""
    file = journal_for(staging)
    dataset_dir = Path(os.path.abspath(dataset_dir))
    try:
        with open(file, encoding="utf-8") as fh:
            body = json.load(fh)
        if not isinstance(body, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        raise TransferError(
            f"Promotion journal {file} is unreadable ({exc}).",
            hint=f"Remove {file} and {staging}, then pull again.",
        ) from None
    try:
        if body.get("version") != JOURNAL_VERSION:
            raise TransferError(f"Unknown promotion journal version in {file}.")
        target = body.get("dataset_dir")
        if not isinstance(target, str) or not same_dir(Path(target), dataset_dir):
            raise TransferError(
                f"Promotion journal {file} promotes into another directory than {dataset_dir}."
            )
        dataset_id, remote = body.get("dataset", ""), body.get("remote", "")
        return Journal(
            file=file,
            staging=staging,
            dataset_dir=dataset_dir,
            dataset_id=dataset_id if isinstance(dataset_id, str) else "",
            remote=remote if isinstance(remote, str) else "",
            install=_entries(body, "install", file),
            delete=_entries(body, "delete", file),
            watch=_entries(body, "watch", file),
        )
    except TransferError as exc:
        raise TransferError(exc.message, hint=f"Remove {file} and {staging}, then pull again.") from None


def local_changes(journal: Journal) -> list[str]:
    """Journal paths whose dataset file changed since the journal was written (a local write
    after the interruption), which completing the promotion would overwrite or lose.

    Raises TransferError when a staged file is gone while its target still holds the old state
    (the promotion cannot be completed)."""
    changed = []
    for entry in journal.install:
        src = _checked_path(journal.staging, entry.path)
        dst = _checked_path(journal.dataset_dir, entry.path)
        if os.path.lexists(src):
            if not _matches(dst, entry.before):
                changed.append(entry.path)
        elif not _matches(dst, entry.after):
            if _matches(dst, entry.before):
                raise TransferError(
                    f"Interrupted promotion cannot be completed: staged {entry.path} is missing "
                    "and its target was never replaced.",
                    hint=f"Remove {journal.file} and {journal.staging}, then pull again.",
                )
            changed.append(entry.path)
    for entry in journal.delete:
        dst = _checked_path(journal.dataset_dir, entry.path)
        if os.path.lexists(dst) and not _matches(dst, entry.before):
            changed.append(entry.path)
    for entry in journal.watch:
        if not _matches(_checked_path(journal.dataset_dir, entry.path), entry.before):
            changed.append(entry.path)
    return sorted(set(changed))


class PromotionConflict(VerificationError):
    """A local change made after an interrupted promotion was journaled: completing it would lose it."""


def _refuse_conflict(journal: Journal, changed: list[str]) -> PromotionConflict:
    ds = journal.dataset_id or journal.dataset_dir.name
    paths = " ".join(shlex.quote(str(p)) for p in (journal.staging, journal.file))
    return PromotionConflict(
        f"Interrupted pull promotion of '{ds}' cannot be completed: the local dataset changed after "
        f"the promotion was journaled ({', '.join(changed[:10])}); completing it would discard those "
        "local changes. Nothing was changed.",
        hint=(
            f"To keep the local changes, abandon the promotion with `rm -r {paths}`; then "
            f"`usr diff {ds} REMOTE` shows how the sides differ, and pull/push refuse a diverged "
            "event history as usual. To take the remote's copy instead, abandon it the same way, "
            f"move {journal.dataset_dir} aside and pull again."
        ),
    )


def roll_forward(staging: Path, dataset_dir: Path) -> tuple[int, int]:
    """Complete the promotion a journal describes (idempotent); remove staging afterwards.

    Returns (installed, deleted). Before any rename or delete it checks every journal path (no
    `..`, no reserved name, no symlink on the way, inside `dataset_dir`) and that no file changed
    since the journal was written. Raises TransferError for an unsafe or incomplete journal and
    PromotionConflict (nothing touched) for a local change."""
    journal = read_journal(staging, dataset_dir)
    dest = journal.dataset_dir
    changed = local_changes(journal)
    if changed:
        raise _refuse_conflict(journal, changed)
    installed = deleted = 0
    touched = {dest}
    for entry in journal.install:
        src = _checked_path(staging, entry.path)
        if os.path.lexists(src):
            dst = _checked_path(dest, entry.path, create_parents=True)
            os.replace(src, dst)
            touched.add(dst.parent)
            installed += 1
    for entry in journal.delete:
        path = _checked_path(dest, entry.path)
        try:
            path.unlink()
            deleted += 1
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            continue
        touched.add(path.parent)
        prune_empty(path.parent, dest)
    for directory in sorted(touched, key=lambda d: len(d.parts), reverse=True):
        fsync_dir(directory)  # every rename durable before the journal goes
    journal.file.unlink(missing_ok=True)
    fsync_dir(journal.file.parent)
    remove_staging(staging)
    return installed, deleted


def pending_journals(root: Path, dataset_id: str, dataset_dir: Path) -> list[Path]:
    """Staging dirs whose promotion into `dataset_dir` was interrupted (their journal exists)."""
    return [p.staging for p in promotions_at(Path(root), dataset_id, Path(os.path.abspath(dataset_dir)))]
