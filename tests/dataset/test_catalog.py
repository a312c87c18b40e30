from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from usrbatch.dataset.catalog import dataset_info, list_datasets, validate_dataset
from usrbatch.dataset.overlays import write_overlay_part
from usrbatch.dataset.records import init_dataset
from usrbatch.dataset.ref import DatasetRef


def test_list_datasets_finds_flat_and_namespaced(root: Path) -> None:
    init_dataset(root, "flat")
    init_dataset(root, "ns/one")
    init_dataset(root, "ns/two")
    (root / "ns" / "not_a_dataset").mkdir()
    (root / "_scratch").mkdir()
    assert list_datasets(root) == ["flat", "ns/one", "ns/two"]


def test_info_counts_rows_overlays_and_events(dataset: DatasetRef) -> None:
    ids = pq.read_table(dataset.records, columns=["id"])["id"].to_pylist()
    write_overlay_part(dataset, "infer", [{"id": ids[0], "ll": 1.0}])
    write_overlay_part(dataset, "infer", [{"id": ids[1], "label": "x"}])
    info = dataset_info(dataset)
    assert info.rows == 4
    assert info.base_columns == ["id", "bio_type", "sequence", "alphabet", "length", "source", "created_at"]
    assert info.overlay_columns == ["infer__ll", "infer__label"]
    assert [(o.namespace, o.parts, o.compact) for o in info.overlays] == [("infer", 2, False)]
    assert info.events == len((dataset.dir / ".events.log").read_text().splitlines())
    assert info.size_bytes > dataset.records.stat().st_size


def test_validate_clean_dataset(dataset: DatasetRef) -> None:
    report = validate_dataset(dataset)
    assert report.errors == [] and report.ok(strict=True)


def test_validate_reports_bad_ids_overlays_and_log(dataset: DatasetRef) -> None:
    table = pq.read_table(dataset.records)
    ids = table["id"].to_pylist()
    ids[1] = ids[0]
    bad = table.set_column(0, "id", pa.array(ids, pa.string())).replace_schema_metadata(None)
    pq.write_table(bad, dataset.records)
    derived = dataset.dir / "_derived"
    derived.mkdir()
    pq.write_table(pa.table({"id": [ids[0]], "rogue__x": [1]}), derived / "rogue.parquet")
    pq.write_table(pa.table({"id": [ids[0]], "infer__ll": ["text"]}), derived / "infer.parquet")
    with open(dataset.dir / ".events.log", "ab") as fh:
        fh.write(b"{broken\n")
    report = validate_dataset(dataset)
    text = "\n".join(report.errors)
    assert "1 id(s) are not sha1" in text
    assert "1 duplicate id(s)" in text
    assert "namespace 'rogue' is not registered" in text
    assert "_derived/infer.parquet: column 'infer__ll' is string, registered as float64" in text
    assert "Event log contains malformed JSON at line" in text
    assert any("metadata key" in w for w in report.warnings)  # usr: metadata was dropped above
    assert not report.ok(strict=False)


def test_validate_strict_turns_warnings_into_errors(dataset: DatasetRef) -> None:
    (dataset.dir / ".events.log").unlink()
    report = validate_dataset(dataset)
    assert report.errors == [] and report.warnings == [".events.log is missing."]
    assert report.ok(strict=False) and not report.ok(strict=True)
    assert json.dumps(report.warnings)
