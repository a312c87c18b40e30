"""`_derived/<ns>/digest_ledger.json`: the public tool's provenance ledger of a part directory.

The public `write_overlay_part` keeps an existing ledger current (it never creates one; that is
`write_overlay_digest_ledger`), so every write of ours into a part directory does the same:
`update_digest_ledger` after the new part is in place. Same rules as the public tool: when the
ledger is readable, has schema `usr.overlay_digest_ledger.v1`, was written for this directory and
names only parts that still exist, the recorded digests are kept and the new parts are added;
otherwise the ledger is rebuilt from every part. Format: JSON, indent 2, trailing newline, paths
absolute (as the public tool writes them), header fields from the first part by name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from usrbatch.dataset import schema as S
from usrbatch.files import atomic_write_bytes, sha256_file

LEDGER_FILE = "digest_ledger.json"
LEDGER_SCHEMA = "usr.overlay_digest_ledger.v1"


def ledger_path(part_dir: Path) -> Path:
    return part_dir / LEDGER_FILE


def _digest(path: Path) -> str:
    return f"sha256:{sha256_file(path)}"


def _entry(part: Path) -> dict[str, str]:
    resolved = part.resolve()
    return {"name": resolved.name, "path": resolved.as_posix(), "digest": _digest(resolved)}


def _header(parts: list[Path]) -> dict[str, Any]:
    """namespace/key/created_at/registry_hash/namespace_contract_hash of the first part by name."""
    try:
        meta = S.read_metadata(pq.read_schema(parts[0])) if parts else {}
    except (pa.ArrowInvalid, OSError):
        meta = {}
    return {
        "key": meta.get(S.META_OVERLAY_KEY),
        "created_at": meta.get(S.META_OVERLAY_CREATED_AT),
        "registry_hash": meta.get(S.META_REGISTRY_HASH),
        "namespace_contract_hash": meta.get(S.META_NAMESPACE_CONTRACT_HASH),
        "namespace_meta": meta.get(S.META_OVERLAY_NAMESPACE),
    }


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def update_digest_ledger(part_dir: Path, new_parts: list[Path]) -> Path | None:
    """Bring an existing `part_dir/digest_ledger.json` up to date after `new_parts` were written
    (the public `update_overlay_digest_ledger`); None (nothing written) when there is no ledger."""
    path = ledger_path(part_dir)
    if not path.is_file():
        return None
    resolved = part_dir.resolve()
    parts = sorted(resolved.glob("part-*.parquet"))
    names = [p.name for p in parts]
    payload = _read(path)
    rows: dict[str, dict[str, Any]] = {}
    if (
        payload is not None
        and payload.get("schema_version") == LEDGER_SCHEMA
        and payload.get("overlay_path") == resolved.as_posix()
    ):
        recorded = [e for e in payload.get("parts", []) if isinstance(e, dict) and e.get("name")]
        if {str(e["name"]) for e in recorded} <= set(names):
            rows = {str(e["name"]): dict(e) for e in recorded}
    else:
        payload = None
    for part in new_parts:
        rows[part.name] = _entry(part)
    if payload is None or set(rows) != set(names):
        payload = {"schema_version": LEDGER_SCHEMA, "overlay_path": resolved.as_posix()}
        rows = {p.name: _entry(p) for p in parts}
    header = _header(parts)
    namespace = header.pop("namespace_meta") or resolved.name
    payload = {
        "schema_version": LEDGER_SCHEMA,
        "overlay_path": resolved.as_posix(),
        **{k: v for k, v in payload.items() if k not in ("schema_version", "overlay_path", "parts")},
        "namespace": namespace,
        **header,
        "parts": [rows[name] for name in names],
    }
    atomic_write_bytes(path, (json.dumps(payload, indent=2) + "\n").encode("utf-8"))
    return path
