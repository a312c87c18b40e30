"""Built-in DenseGen: real dense arrays (dense-arrays + CBC) appended to a real dataset."""

from __future__ import annotations

from pathlib import Path

import pytest

from usrbatch.dataset.overlays import read_dataset
from usrbatch.dataset.records import init_dataset
from usrbatch.errors import SchemaError
from usrbatch.jobs.loop import default_tfbs
from usrbatch.steps import densegen


def _run(root: Path, iteration: int = 1) -> dict:
    tfbs = default_tfbs()
    assert tfbs is not None
    return densegen.run(
        root, "ns/demo", tfbs, count=4, length=50, seed=7, iteration=iteration, plan="p1",
        library_size=4, time_limit=10, run_id="job.1",
    )  # fmt: skip


def test_arrays_are_appended_with_densegen_columns(tmp_path: Path) -> None:
    root = tmp_path / "root"
    init_dataset(root, "ns/demo")
    result = _run(root)
    assert result["generated"] == result["rows_written"] >= 1
    table = read_dataset(root / "ns" / "demo")
    assert table.num_rows == result["generated"]
    library = {entry.split(":")[1] for entry in result["library"]}
    for row in table.to_pylist():
        assert row["densegen__run_id"] == "job.1" and row["densegen__plan"] == "p1"
        assert len(row["sequence"]) <= 50
        sites = [u.split(":")[1] for u in row["densegen__used_tfbs"]]
        assert sites and set(sites) <= library
        assert row["densegen__compression_ratio"] > 0
        gc = sum(row["sequence"].count(b) for b in "GC") / len(row["sequence"])
        assert row["densegen__gc_total"] == pytest.approx(gc)
    assert str(table.schema.field("densegen__used_tfbs").type) == "list<element: string>"


def test_rerun_is_deterministic_and_adds_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    init_dataset(root, "ns/demo")
    first = _run(root)
    parts = list((root / "ns" / "demo" / "_derived" / "densegen").iterdir())
    again = _run(root)
    assert again["rows_written"] == 0 and again["rows_skipped"] == first["generated"]
    assert again["annotated"] == 0 and again["library"] == first["library"]
    assert list((root / "ns" / "demo" / "_derived" / "densegen").iterdir()) == parts
    nxt = _run(root, iteration=2)
    assert nxt["library"] != first["library"]


def test_bad_motif_table_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "tfbs.csv"
    bad.write_text("tf,tfbs\nA,ACGT\nB,ACGN\n")
    with pytest.raises(SchemaError, match=r"tfbs.csv:3: tfbs 'ACGN'"):
        densegen.read_tfbs(bad)


def test_runs_inside_a_job_that_exports_omp_num_threads(tmp_path: Path, monkeypatch) -> None:
    """Job templates export OMP_NUM_THREADS; CBC must still solve (dense-arrays refuses threads for CBC)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    root = tmp_path / "root"
    init_dataset(root, "ns/demo")
    assert _run(root)["rows_written"] >= 1
