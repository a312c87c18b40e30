"""Real datasets on disk for sync tests: plain pyarrow + files, no mocks.

Shared by tests/sync, tests/cli/test_sync_cmds.py and tests/integration/test_sync_*.py.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from usrbatch.dataset.layout import is_runtime
from usrbatch.dataset.schema import CORE_SCHEMA


def write_records(path: Path, n: int, *, tag: str = "a") -> None:
    """A records.parquet with the core schema (sync refuses anything else as a primary)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sequences = ["ACGT" * (i + 1) for i in range(n)]
    table = pa.table(
        {
            "id": [f"{tag}{i}" for i in range(n)],
            "bio_type": ["dna"] * n,
            "sequence": sequences,
            "alphabet": ["dna_4"] * n,
            "length": [len(s) for s in sequences],
            "source": [f"test-{tag}"] * n,
            "created_at": [datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)] * n,
        },
        schema=CORE_SCHEMA,
    )
    pq.write_table(table, path)


def add_event(dataset: Path, action: str, **args: object) -> None:
    """Append one compact JSON object line (what the data plane writes)."""
    line = json.dumps({"event_version": 1, "action": action, "args": args}, separators=(",", ":"))
    with open(dataset / ".events.log", "a", encoding="utf-8") as fh:
        fh.write(line + "\n")


def write_part(dataset: Path, namespace: str, rows: int = 2) -> str:
    """A new overlay part `_derived/<ns>/part-<uuid>.parquet`; returns its path under _derived."""
    name = f"part-{uuid.uuid4().hex}.parquet"
    path = dataset / "_derived" / namespace / name
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.table({"id": [f"a{i}" for i in range(rows)], f"{namespace}__score": [0.5] * rows}), path
    )
    return f"{namespace}/{name}"


def make_dataset(root: Path, ds: str = "densegen/demo", *, rows: int = 3) -> Path:
    """A dataset with every section: primary, meta, events, a snapshot, an overlay, aux files."""
    d = root / ds
    write_records(d / "records.parquet", rows)
    write_records(d / "_snapshots" / "records-20260101T000000123456.parquet", rows)
    (d / "meta.md").write_text(f"# {ds}\n\ncreated for tests\n")
    add_event(d, "init")
    add_event(d, "import_rows", rows=rows)
    write_part(d, "densegen")
    (d / "_registry").mkdir(parents=True, exist_ok=True)
    (d / "_registry" / "registry.abc.yaml").write_text("namespaces: {}\n")
    (d / "_artifacts" / "batch").mkdir(parents=True, exist_ok=True)
    (d / "_artifacts" / "batch" / "checkpoint.json").write_text('{"step": 1}\n')
    return d


def tree(path: Path) -> dict[str, str]:
    """{relpath: sha256} of every non-runtime file (dirs implied), for byte-identity checks."""
    out: dict[str, str] = {}
    if not path.exists():
        return out
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            full = Path(dirpath) / name
            rel = full.relative_to(path).as_posix()
            if is_runtime(rel):
                continue
            out[rel] = hashlib.sha256(full.read_bytes()).hexdigest()
    return out


def snapshot_all(path: Path) -> dict[str, tuple[str, int]]:
    """Every entry under `path`, runtime files and dirs included: used to prove "nothing changed"."""
    out: dict[str, tuple[str, int]] = {}
    if not path.exists():
        return out
    for dirpath, dirs, files in os.walk(path):
        for name in dirs:
            out[(Path(dirpath) / name).relative_to(path).as_posix() + "/"] = ("dir", 0)
        for name in files:
            full = Path(dirpath) / name
            st = full.lstat()
            out[full.relative_to(path).as_posix()] = (
                hashlib.sha256(full.read_bytes()).hexdigest(),
                st.st_mtime_ns,
            )
    return out
