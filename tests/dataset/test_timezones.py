"""Time-zone type specs: malformed zones are refused at registration, registered types are stored
in the public tool's spelling, and tz-aware timestamps display without a time-zone database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from usrbatch.dataset.overlays import write_overlay_part
from usrbatch.dataset.records import import_records, init_dataset
from usrbatch.dataset.registry import load_registry, register_namespace
from usrbatch.errors import SchemaError

VENV_USR = Path(sys.executable).with_name("usr")


@pytest.mark.parametrize("spec", ["timestamp[us, tz=UTC]", "timestamp[us, utc]", "timestamp[us, Mars/Base]"])
def test_malformed_time_zones_are_refused_at_register(tmp_path: Path, spec: str) -> None:
    with pytest.raises(SchemaError, match="time zone .* is not known") as info:
        register_namespace(tmp_path, "evt", f"evt__t:{spec}")
    assert spec in info.value.message and "timestamp[us, UTC]" in (info.value.hint or "")
    assert not (tmp_path / "registry.yaml").exists()


def test_registered_types_are_stored_in_the_spelling_the_public_validate_compares(tmp_path: Path) -> None:
    register_namespace(
        tmp_path,
        "evt",
        "evt__a:timestamp[us,UTC],evt__b:timestamp[ms, Europe/Berlin],evt__c:timestamp[s, +01:00],"
        "evt__d:list< float64 >,evt__e:struct<a: int32, b:timestamp[us,UTC]>",
    )
    registry = load_registry(tmp_path)
    assert registry is not None
    assert [c.type for c in registry.namespaces["evt"].columns] == [
        "timestamp[us, UTC]",
        "timestamp[ms, Europe/Berlin]",
        "timestamp[s, +01:00]",
        "list<float64>",
        "struct<a:int32,b:timestamp[us, UTC]>",
    ]


def _dataset_with_new_york_times(root: Path) -> str:
    ref = init_dataset(root, "ns/tz").dataset
    import_records(ref, [{"sequence": "ACGT"}])
    register_namespace(root, "evt", "evt__t:timestamp[us, America/New_York]")
    ids = pq.read_table(ref.records)["id"].to_pylist()
    moment = pa.array([1_767_225_600_000_000], pa.timestamp("us", tz="America/New_York"))  # 2026-01-01 00:00Z
    write_overlay_part(ref, "evt", pa.table({"id": ids, "evt__t": moment}))
    return "ns/tz"


def _head(root: Path, dataset: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_USR), "--root", str(root), "head", dataset, "--columns", "evt__t"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_tz_aware_timestamps_display_in_their_zone(tmp_path: Path) -> None:
    dataset = _dataset_with_new_york_times(tmp_path)
    proc = _head(tmp_path, dataset, dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    assert "2025-12-31T19:00:00-05:00" in proc.stdout


def test_tz_aware_timestamps_display_without_any_time_zone_database(tmp_path: Path) -> None:
    """No system zoneinfo (TZDIR, PYTHONTZPATH empty) and no tzdata package importable: `head`
    shows the right instant in UTC instead of a traceback."""
    dataset = _dataset_with_new_york_times(tmp_path / "root")
    empty = tmp_path / "empty"
    hide = tmp_path / "hide" / "tzdata"
    empty.mkdir()
    hide.mkdir(parents=True)
    (hide / "__init__.py").write_text('raise ImportError("no tzdata on this machine")\n')
    env = dict(os.environ, TZDIR=str(empty), PYTHONTZPATH=str(empty), PYTHONPATH=str(hide.parent))
    probe = subprocess.run(
        [sys.executable, "-c", "import zoneinfo; zoneinfo.ZoneInfo('America/New_York')"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert probe.returncode != 0, "the time-zone database is still reachable"
    proc = _head(tmp_path / "root", dataset, env)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "2026-01-01T00:00:00+00:00" in proc.stdout
