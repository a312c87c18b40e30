"""The public output formats (§10): plain diff, printed audit summary, audit JSON
(`usr_output_version: 1`) and the diff JSON. Pure functions from a DiffSummary to text/data."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from usrbatch.files import atomic_write_text
from usrbatch.sync.plan import DiffSummary

OUTPUT_VERSION = 1


def transfer_state(action: str, *, dry_run: bool, has_change: bool) -> str:
    if action == "diff":
        return "DIFF-ONLY"
    if dry_run:
        return "DRY-RUN"
    return "TRANSFERRED" if has_change else "NO-OP"


def audit_payload(
    summary: DiffSummary, *, action: str, state: str, sidecars: bool, content_hashes: bool
) -> dict[str, Any]:
    """The `data` object of the audit JSON, keys exactly as §10."""
    ch = summary.changes
    newer = summary.snapshots.newer_than_local
    dl, dr = summary.derived_local_files, summary.derived_remote_files
    al, ar = summary.aux_local_files, summary.aux_remote_files
    is_diff = action == "diff"
    return {
        "action": action,
        "transfer_state": state,
        "dataset": summary.dataset,
        "verify": {
            "primary": summary.verify_mode,
            "sidecars": "strict" if sidecars and not is_diff else "off",
            "content_hashes": "on" if content_hashes and not is_diff else "off",
        },
        "primary": {"changed": bool(ch.get("primary_sha_diff"))},
        "meta": {"changed": bool(ch.get("meta_content_diff"))},
        ".events.log": {
            "changed": bool(ch.get("events_content_diff", False)),
            "local": summary.events_local_lines,
            "remote": summary.events_remote_lines,
        },
        "_snapshots": {
            "changed": bool(ch.get("snapshots_name_diff") or ch.get("snapshots_content_diff")) or newer > 0,
            "remote_count": summary.snapshots.count,
            "newer_than_local": newer,
        },
        "_derived": {
            "changed": bool(ch.get("derived_files_diff")),
            "local_files": len(dl),
            "remote_files": len(dr),
            "local_only": sorted(set(dl) - set(dr)),
            "remote_only": sorted(set(dr) - set(dl)),
        },
        "_auxiliary": {
            "changed": bool(ch.get("aux_files_diff")),
            "local_files": len(al),
            "remote_files": len(ar),
            "local_only": sorted(set(al) - set(ar)),
            "remote_only": sorted(set(ar) - set(al)),
        },
    }


def audit_json_text(payload: dict[str, Any]) -> str:
    """Compact JSON plus a newline."""
    return json.dumps({"usr_output_version": OUTPUT_VERSION, "data": payload}, separators=(",", ":")) + "\n"


def write_audit_json(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically, creating parent dirs."""
    # Owner-only, as it has always been written (it names hosts and paths).
    atomic_write_text(Path(path), audit_json_text(payload), mode=0o600)


def _changed(flag: object) -> str:
    return "changed" if flag else "unchanged"


def audit_lines(payload: dict[str, Any]) -> list[str]:
    """The printed audit summary."""
    v, d, a, s = payload["verify"], payload["_derived"], payload["_auxiliary"], payload["_snapshots"]
    ev = payload[".events.log"]
    return [
        f"{payload['action'].upper()} audit: {payload['transfer_state']}",
        f"Dataset    : {payload['dataset']}",
        f"Verify     : primary={v['primary']} sidecars={v['sidecars']} content_hashes={v['content_hashes']}",
        f"Primary    : {_changed(payload['primary']['changed'])}",
        f"meta.md    : {_changed(payload['meta']['changed'])}",
        f".events.log: local={ev['local']}  remote={ev['remote']}",
        f"_snapshots : {_changed(s['changed'])}  remote_count={s['remote_count']}  newer_than_local={s['newer_than_local']}",
        f"_derived   : {_changed(d['changed'])}  local_files={d['local_files']}  remote_files={d['remote_files']}"
        f"  local_only={len(d['local_only'])}  remote_only={len(d['remote_only'])}",
        f"_auxiliary : {_changed(a['changed'])}  local_files={a['local_files']}  remote_files={a['remote_files']}"
        f"  local_only={len(a['local_only'])}  remote_only={len(a['remote_only'])}",
    ]


def human_size(size: int | None) -> str:
    """Bytes divided by 1024 into B/KB/MB/GB/TB with `%.0f` (public formatting)."""
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024:
            return f"{value:.0f}{unit}"
        value /= 1024
    return f"{value:.0f}PB"


def diff_lines(summary: DiffSummary) -> list[str]:
    """The plain diff (§10 `print_diff`)."""
    pl, pr, ch = summary.primary_local, summary.primary_remote, summary.changes
    eq = "==" if (pl.sha256 and pr.sha256 and pl.sha256 == pr.sha256) else "≠"
    delta = max(0, summary.events_remote_lines - summary.events_local_lines)
    return [
        f"Dataset: {summary.dataset}",
        f"Local  : {pl.sha256 or '?'}  size={human_size(pl.size)}  rows={pl.rows or '?'}  cols={pl.cols or '?'}",
        f"Remote : {pr.sha256 or '?'}  size={human_size(pr.size)}  rows={pr.rows or '?'}  cols={pr.cols or '?'}",
        f"Primary sha: {pl.sha256 or '?'} {eq} {pr.sha256 or '?'}",
        f"meta.md     mtime: {summary.meta_local_mtime or '-'}  →  {summary.meta_remote_mtime or '-'}",
        f".events.log {_changed(ch.get('events_content_diff'))} lines: local={summary.events_local_lines}"
        f"  remote={summary.events_remote_lines}  (+{delta} on remote)",
        f"_snapshots : remote_count={summary.snapshots.count}  newer_than_local={summary.snapshots.newer_than_local}",
        f"_derived   : {_changed(ch.get('derived_files_diff'))}  local_files={len(summary.derived_local_files)}"
        f"  remote_files={len(summary.derived_remote_files)}",
        f"_auxiliary : {_changed(ch.get('aux_files_diff'))}  local_files={len(summary.aux_local_files)}"
        f"  remote_files={len(summary.aux_remote_files)}",
        f"Status     : {'CHANGES' if summary.has_change else 'up-to-date'}",
        f"Verify     : {summary.verify_mode}",
    ]


def diff_json_text(summary: DiffSummary) -> str:
    """`--format json`: every DiffSummary field under `data`."""
    return json.dumps(
        {"usr_output_version": OUTPUT_VERSION, "data": dataclasses.asdict(summary)},
        separators=(",", ":"),
    )
