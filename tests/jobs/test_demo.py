"""`usrbatch demo` end to end (local scheduler, local remote): the loop completes, the final diff
is up-to-date, and both copies of the dataset pass the public tool's default validate (every
namespace was registered before the loop's first write, so no overlay carries a stale hash)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from usrbatch.dataset.catalog import validate_dataset
from usrbatch.dataset.ref import open_dataset
from usrbatch.dataset.registry import load_registry
from usrbatch.jobs.demo import DATASET, run_demo


def test_demo_dataset_passes_the_public_default_validate_on_both_sides(tmp_path: Path) -> None:
    lines: list[str] = []
    assert run_demo(workdir=tmp_path / "ws", iterations=2, timeout=600, emit=lines.append), "\n".join(lines)
    for side in ("local", "cluster"):
        root = tmp_path / "ws" / side
        ref = open_dataset(root, DATASET)
        report = validate_dataset(ref, registry_mode="current")
        assert report.errors == [], (side, report.errors)
        current = load_registry(root)
        assert current is not None
        parts = sorted((ref.dir / "_derived").rglob("part-*.parquet"))
        assert {p.parent.name for p in parts} == {"densegen", "infer"}
        stamps = {pq.read_schema(p).metadata[b"usr:registry_hash"].decode() for p in parts}
        assert stamps == {current.hash}, side  # one registry hash for every part of every iteration
