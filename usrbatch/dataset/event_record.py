"""One `.events.log` record: the payload (the public key order, per-action defaults, the actor,
the target's fingerprint, redacted args) and the encoding rules (compact ASCII JSON, one line,
the 1 MiB cap), checked before anything is written.

Payload key order and defaults follow the public USR tool (usr-contract §7.1) so logs written by
either tool interleave. Appending: event_append.py; reading: event_read.py.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from usrbatch import __version__
from usrbatch.errors import EventLogError
from usrbatch.files import sha256_file
from usrbatch.redaction import redact

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
    import pyarrow.parquet as pq  # here, not at the top: reading the log (`usr events tail`) needs no pyarrow

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
