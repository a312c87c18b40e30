"""`.events.log`: the append-only JSONL event log (payload, redaction, the 1 MiB cap, append, tail).

Payload key order and defaults follow the public USR tool (usr-contract §7.1) so logs written by
either tool interleave. Appends happen under the event lock with fsync; a failed append truncates
the log back to its previous size.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import os
import shlex
import socket
import stat
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from usrbatch import __version__
from usrbatch.dataset.layout import EVENTS, RECORDS
from usrbatch.dataset.locks import event_lock
from usrbatch.errors import EventLogError
from usrbatch.files import sha256_file
from usrbatch.redaction import REDACTED, SECRET_MARKERS, redact  # noqa: F401 - re-exported

EVENT_VERSION = 1
MAX_RECORD_BYTES = 1_048_576

_DEFAULTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "init": ({"rows": 0}, {"overlays": []}),
    "import_rows": ({"rows_written": 0, "rows_skipped": 0}, {"base": {}}),
    "attach": ({"rows_incoming": 0, "rows_matched": 0, "rows_missing": 0}, {"overlay": {}}),
    "write_overlay_part": ({"rows_incoming": 0, "rows_written": 0, "rows_missing": 0}, {"overlay": {}}),
    "tombstone": ({"rows": 0}, {"overlay": {"namespace": "usr"}}),
    "restore": ({"rows": 0}, {"overlay": {"namespace": "usr"}}),
    "state_set": ({"rows": 0}, {"overlay": {"namespace": "usr_state"}}),
    "state_clear": ({"rows": 0}, {"overlay": {"namespace": "usr_state"}}),
    "snapshot": ({"rows": 0}, {"snapshot": {}}),
    "materialize": ({"overlays": 0, "rows": 0}, {"overlays": []}),
    "dedupe": ({"rows_total": 0, "rows_dropped": 0, "groups": 0}, {"base": {}}),
    "merge": (
        {"rows_added": 0, "duplicates_total": 0, "duplicates_skipped": 0, "duplicates_replaced": 0},
        {"src": None, "dest": None},
    ),
    "registry_freeze": ({"updated": False}, {"registry_snapshot": ""}),
    "overlay_compact": ({"parts_in": 0, "parts_out": 0, "rows": 0}, {"overlay": {}}),
    "remove_overlay": ({"removed": False}, {"overlay": {}}),
    "event_log_garden": (
        {"total_lines": 0, "retained_lines": 0, "archived_lines": 0},
        {"source_sha256": None},
    ),
}


def utc_timestamp(moment: dt.datetime | None = None) -> str:
    """`YYYY-MM-DDTHH:MM:SS.ffffffZ` in UTC."""
    moment = moment or dt.datetime.now(dt.UTC)
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def default_actor() -> dict[str, Any]:
    pid = os.getpid()
    return {
        "tool": os.environ.get("USR_ACTOR_TOOL") or "usr",
        "run_id": os.environ.get("USR_ACTOR_RUN_ID") or f"usr-pid-{pid}",
        "host": socket.gethostname(),
        "pid": pid,
    }


def fingerprint(target: Path) -> dict[str, Any]:
    """rows/cols/size_bytes of a parquet target (+sha256 when USR_EVENT_SHA256=1)."""
    out: dict[str, Any] = {"rows": 0, "cols": 0, "size_bytes": 0}
    try:
        out["size_bytes"] = target.stat().st_size
        meta = pq.ParquetFile(target).metadata
        out["rows"] = int(meta.num_rows)
        out["cols"] = int(meta.num_columns)
    except Exception:  # a fingerprint never fails an event
        pass
    if os.environ.get("USR_EVENT_SHA256") == "1" and target.is_file():
        out["sha256"] = sha256_file(target)
    return out


def _merge(defaults: dict[str, Any], given: Mapping[str, Any] | None) -> dict[str, Any]:
    merged = json.loads(json.dumps(defaults))  # deep copy of the defaults
    merged.update(dict(given or {}))
    return merged


def build_event(
    action: str,
    *,
    dataset_name: str,
    root: Path | str | None,
    args: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    artifacts: Mapping[str, Any] | None = None,
    maintenance: Mapping[str, Any] | None = None,
    target: Path | None = None,
    registry_hash: str | None = None,
    actor: Mapping[str, Any] | None = None,
    timestamp: str | None = None,
) -> dict[str, Any]:
    """The event payload with the public key order and per-action defaults."""
    default_metrics, default_artifacts = _DEFAULTS.get(action, ({}, {}))
    if actor is not None:
        if not str(actor.get("tool") or "").strip() or not str(actor.get("run_id") or "").strip():
            raise EventLogError("An explicit event actor needs a non-empty 'tool' and 'run_id'.")
        actor_payload = dict(actor)
    else:
        actor_payload = default_actor()
    return {
        "event_version": EVENT_VERSION,
        "timestamp_utc": timestamp or utc_timestamp(),
        "action": action,
        "dataset": {"name": dataset_name, "root": str(Path(root).absolute()) if root else None},
        "args": redact(dict(args or {})),
        "metrics": _merge(default_metrics, metrics),
        "artifacts": _merge(default_artifacts, artifacts),
        "maintenance": dict(maintenance or {}),
        "fingerprint": fingerprint(target) if target is not None else {"rows": 0, "cols": 0, "size_bytes": 0},
        "registry_hash": registry_hash,
        "actor": actor_payload,
        "version": __version__,
    }


class EventRecordError(EventLogError, ValueError):
    """An encoded record is empty, too large or contains a line break (raised before writing)."""


def encode_event(payload: Mapping[str, Any]) -> bytes:
    """Compact ASCII JSON plus `\\n`; EventRecordError when it breaks the record rules."""
    try:
        text = json.dumps(payload, separators=(",", ":"), ensure_ascii=True, allow_nan=False, default=str)
    except ValueError as exc:
        raise EventRecordError(f"Event payload is not valid JSON: {exc}") from exc
    return check_record(text.encode("ascii") + b"\n")


def check_record(data: bytes) -> bytes:
    """Enforce the append rules on one encoded record (JSON + `\\n`)."""
    body = data[:-1] if data.endswith(b"\n") else data
    if not body:
        raise EventRecordError("Event record is empty; nothing to append.")
    if b"\n" in body or b"\r" in body:
        raise EventRecordError("Event record contains a line break; a record must be one line.")
    if len(body) + 1 > MAX_RECORD_BYTES:
        raise EventRecordError(
            f"Event record is {len(body) + 1} bytes, over the {MAX_RECORD_BYTES}-byte encoded-record "
            "limit. Pass smaller args/metrics (store large data as an artifact file and reference it)."
        )
    return body + b"\n"


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


@dataclass(frozen=True)
class DatasetLocation:
    """Where a dataset dir sits: its datasets root and its id (flat or namespace/name)."""

    root: Path
    dataset_id: str


def locate(dataset_dir: Path | str) -> DatasetLocation:
    """Infer (root, id) for a dataset dir: the nearest ancestor (≤2 up) holding registry.yaml, else the parent."""
    directory = Path(dataset_dir).absolute()
    for up in (1, 2):
        candidate = directory.parents[up - 1] if len(directory.parents) >= up else None
        if candidate is not None and (candidate / "registry.yaml").is_file():
            return DatasetLocation(candidate, directory.relative_to(candidate).as_posix())
    return DatasetLocation(directory.parent, directory.name)


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


# ---------------------------------------------------------------------------------------------
# Reading


def _events_path(dataset_dir: Path | str) -> Path:
    path = Path(dataset_dir) / EVENTS
    if not path.is_file():
        raise EventLogError(f"Events log not found: {path}")
    return path


def iter_lines(dataset_dir: Path | str) -> Iterator[bytes]:
    """Every non-empty line, streamed (bounded memory for `usr events tail -n 0` on a large log)."""
    with open(_events_path(dataset_dir), "rb") as fh:
        for line in fh:
            if line.strip():
                yield line.rstrip(b"\r\n")


def tail_lines(dataset_dir: Path | str, n: int = 0) -> list[bytes]:
    """The last `n` non-empty lines (0 = all), reading backwards so large logs are not fully read."""
    path = _events_path(dataset_dir)
    if n < 0:
        raise EventLogError("--n must be >= 0 (0 = all lines).")
    with open(path, "rb") as fh:
        if n == 0:
            return [line.rstrip(b"\r\n") for line in fh if line.strip()]
        fh.seek(0, os.SEEK_END)
        position = fh.tell()
        blocks: list[bytes] = []
        newlines = 0
        block = 64 * 1024
        while position > 0 and newlines <= n:  # n+1 newlines before the end bound the last n lines
            step = min(block, position)
            position -= step
            fh.seek(position)
            blocks.append(fh.read(step))
            newlines += blocks[-1].count(b"\n")
            if newlines > n:  # blank lines do not count: confirm on the joined tail (once per hit)
                found = sum(1 for line in b"".join(reversed(blocks)).split(b"\n") if line.strip())
                newlines = n + 1 if found > n else found
    buffer = b"".join(reversed(blocks))
    lines = [line.rstrip(b"\r") for line in buffer.split(b"\n") if line.strip()]
    return lines[-n:]


def render_line(line: bytes, fmt: str) -> str:
    """json: compact re-serialization (key order kept, ASCII); raw: the stripped line."""
    if fmt == "raw":
        return line.decode("utf-8", errors="replace").strip()
    if fmt != "json":
        raise EventLogError("format must be one of: json, raw.")
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise EventLogError(f"Invalid JSONL event line: {line[:200]!r}") from exc
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=True)


def follow_lines(dataset_dir: Path | str, *, poll_s: float = 0.2) -> Iterator[bytes]:
    """Yield complete lines appended after now (seek to EOF, poll every 0.2 s). Runs until interrupted."""
    path = _events_path(dataset_dir)
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        pending = b""
        while True:
            chunk = fh.read()
            if not chunk:
                time.sleep(poll_s)
                continue
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for line in complete:
                if line.strip():
                    yield line.rstrip(b"\r")


def check_event_log(path: Path) -> list[str]:
    """Problems of an event log (§7.3 wording), streamed; [] when valid or absent."""
    problems: list[str] = []
    if not path.exists() and not path.is_symlink():
        return problems
    if path.is_symlink() or not path.is_file():
        return [f"Event log must be one regular file: {path}"]
    with open(path, "rb") as fh:
        number = 0
        for raw in fh:
            number += 1
            if len(raw) > MAX_RECORD_BYTES:
                problems.append(
                    f"Event log record {number} exceeds the {MAX_RECORD_BYTES}-byte encoded-record limit: {path}"
                )
                continue
            if not raw.endswith(b"\n"):
                problems.append("Event log ends with a partial JSONL record")
                break
            body = raw[:-1]
            if not body.strip():
                problems.append(f"Event log contains a blank JSONL record at line {number}")
                continue
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                problems.append(f"Event log is not valid UTF-8 at line {number}")
                continue
            try:
                obj = json.loads(text)
            except ValueError:
                problems.append(f"Event log contains malformed JSON at line {number}")
                continue
            if not isinstance(obj, dict):
                problems.append(f"Event log record {number} is not a JSON object")
    return problems


def count_events(dataset_dir: Path | str) -> int:
    path = Path(dataset_dir) / EVENTS
    if not path.is_file():
        return 0
    with open(path, "rb") as fh:
        return sum(1 for line in fh if line.strip())
