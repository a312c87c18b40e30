"""Appending to `.events.log`: under the event lock, O_APPEND|O_NOFOLLOW, fsync; a log that ends
with a torn line is refused (naming the `truncate` fix), and a failed write truncates the log
back to its previous size. `append_event` builds, encodes and appends one record (event_record.py).
"""

from __future__ import annotations

import errno
import os
import shlex
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from usrbatch.dataset.event_record import build_event, check_record, encode_event
from usrbatch.dataset.layout import EVENTS, RECORDS, locate
from usrbatch.dataset.locks import event_lock
from usrbatch.errors import EventLogError

# A log whose last line is torn (a crash mid-append, a cut copy) is refused rather than repaired by
# terminating the fragment: a terminated fragment is a malformed JSON line for ever, which the
# public validator and every sync prefix proof (§7.3) reject, and an append-only log cannot drop
# it later without rewriting history. Cutting the fragment off is the user's call, so the error
# names the exact byte count and the command.
_TAIL_BLOCK = 64 * 1024


def torn_tail(fd: int, size: int) -> tuple[int, int] | None:
    """(bytes to keep, fragment length) when the file behind `fd` (of `size` bytes) does not end
    with `\n`; None when it does (or is empty). Reads backwards: at most one record's worth."""
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return None
    end = size
    while end > 0:
        start = max(0, end - _TAIL_BLOCK)
        block = os.pread(fd, end - start, start)
        nl = block.rfind(b"\n")
        if nl >= 0:
            keep = start + nl + 1
            return keep, size - keep
        end = start
    return 0, size


def torn_tail_error(path: Path, keep: int, fragment: int) -> EventLogError:
    return EventLogError(
        f"Event log ends with a partial JSONL record: {path} has {fragment} byte(s) after its last "
        f"complete line (which ends at byte {keep}). Refusing to write: the next event would be fused "
        "with it and both records lost.",
        hint="A write was cut off (a crash or an interrupted copy). Look at the fragment with "
        f"`tail -c {fragment} {shlex.quote(str(path))}`, cut it off with "
        f"`truncate -s {keep} {shlex.quote(str(path))}`, then retry.",
    )


def require_complete_log(dataset_dir: Path | str) -> None:
    """EventLogError (naming the fix) when `<dataset>/.events.log` ends with a torn line.

    Called by mutations before they write anything; `append_encoded` checks again under the event
    lock, so a record is never appended onto a fragment.
    """
    path = Path(dataset_dir) / EVENTS
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise EventLogError(f"Event log must be one regular file: {path}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise EventLogError(f"Event log must be one regular file: {path}")
        torn = torn_tail(fd, st.st_size)
    finally:
        os.close(fd)
    if torn is not None:
        raise torn_tail_error(path, *torn)


def append_encoded(dataset_dir: Path | str, data: bytes, *, lock_timeout: float | None = None) -> None:
    """Append one encoded record under the event lock: O_APPEND|O_NOFOLLOW, mode 0666 minus the
    umask (like every dataset file), fsync.

    The record is checked (cap, single line) before anything is touched, and the log must end
    with a complete line (else EventLogError naming the `truncate` fix; nothing is written). On a
    write failure the log is truncated back to its prior size; the EventLogError says `Event log
    append <restored|committed|indeterminate>: <path>`.
    """
    record = check_record(data)
    directory = Path(dataset_dir)
    path = directory / EVENTS
    with event_lock(directory, timeout=lock_timeout):
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise EventLogError(f"Event log must be one regular file: {path}") from exc
            if isinstance(exc, PermissionError):
                raise EventLogError(
                    f"Permission denied opening {path} for appending.",
                    hint="Ask the dataset's owner to give your group write access "
                    "(`chmod -R g+rwX <dataset dir>`), or work on your own copy.",
                ) from exc
            raise
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise EventLogError(f"Event log must be one regular file: {path}")
            prior = st.st_size
            torn = torn_tail(fd, prior)
            if torn is not None:
                raise torn_tail_error(path, *torn)
            try:
                view = memoryview(record)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
                now = os.stat(path, follow_symlinks=False)
                if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                    raise EventLogError(f"Event log append committed: {path} (the path was replaced).")
            except EventLogError:
                raise
            except OSError as exc:
                state = "restored"
                try:
                    os.ftruncate(fd, prior)
                    os.fsync(fd)
                except OSError:
                    state = "indeterminate"
                raise EventLogError(f"Event log append {state}: {path} ({exc})") from exc
        finally:
            os.close(fd)


def append_event(
    dataset_dir: Path | str,
    action: str,
    args: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    artifacts: Mapping[str, Any] | None = None,
    *,
    maintenance: Mapping[str, Any] | None = None,
    target: Path | str | None = None,
    root: Path | str | None = None,
    dataset_name: str | None = None,
    registry_hash: str | None = None,
    actor: Mapping[str, Any] | None = None,
    lock_timeout: float | None = None,
) -> dict[str, Any]:
    """Build, encode and append one event; returns the payload written.

    `target` is the parquet file fingerprinted (default records.parquet). `root`/`dataset_name`
    default to what `locate()` infers; `registry_hash` defaults to the root registry's hash.
    Raises EventRecordError (nothing written) for a record over 1,048,576 bytes.
    """
    directory = Path(dataset_dir)
    if root is None or dataset_name is None:
        where = locate(directory)
        root = root if root is not None else where.root
        dataset_name = dataset_name if dataset_name is not None else where.dataset_id
    if registry_hash is None:
        from usrbatch.dataset.registry import registry_hash as _root_registry_hash

        try:
            registry_hash = _root_registry_hash(root)
        except EventLogError:
            raise
        except Exception:  # noqa: BLE001 - a broken registry must not block the audit trail
            registry_hash = None
    payload = build_event(
        action,
        dataset_name=dataset_name,
        root=root,
        args=args,
        metrics=metrics,
        artifacts=artifacts,
        maintenance=maintenance,
        target=Path(target) if target is not None else directory / RECORDS,
        registry_hash=registry_hash,
        actor=actor,
    )
    append_encoded(directory, encode_event(payload), lock_timeout=lock_timeout)
    return payload
