from __future__ import annotations

import functools
import json
import random
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from usrbatch.dataset import schema as S
from usrbatch.dataset.catalog import dataset_info, list_datasets, validate_dataset
from usrbatch.dataset.overlays import write_overlay_part
from usrbatch.dataset.records import import_records, init_dataset
from usrbatch.dataset.ref import DatasetRef
from usrbatch.dataset.registry import register_namespace, registry_hash
from usrbatch.dataset.scan import SCAN_BATCH_ROWS


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
    stamp = registry_hash(dataset.root)
    _overlay_file(derived / "rogue.parquet", pa.table({"id": [ids[0]], "rogue__x": [1]}), stamp=stamp)
    _overlay_file(derived / "infer.parquet", pa.table({"id": [ids[0]], "infer__ll": ["text"]}), stamp=stamp)
    with open(dataset.dir / ".events.log", "ab") as fh:
        fh.write(b"{broken\n")
    report = validate_dataset(dataset)
    text = "\n".join(report.errors)
    assert "1 id(s) are not sha1" in text
    assert "1 duplicate id(s)" in text
    assert "Namespace 'rogue' is not registered." in text
    assert "Overlay column 'infer__ll' type mismatch: expected float64, got string." in text
    assert "Event log contains malformed JSON at line" in text
    assert any("metadata key" in w for w in report.warnings)  # usr: metadata was dropped above
    assert not report.ok(strict=False)


def test_validate_strict_turns_warnings_into_errors(dataset: DatasetRef) -> None:
    (dataset.dir / ".events.log").unlink()
    report = validate_dataset(dataset)
    assert report.errors == [] and report.warnings == [".events.log is missing."]
    assert report.ok(strict=False) and not report.ok(strict=True)
    assert json.dumps(report.warnings)


def _rewrite_records(ref: DatasetRef, table: pa.Table, **kwargs) -> None:
    """Replace records.parquet (keeping its schema metadata), as a damaged copy would look."""
    pq.write_table(table.replace_schema_metadata(pq.read_schema(ref.records).metadata), ref.records, **kwargs)


def test_validate_catches_duplicate_ids_across_batches(root: Path) -> None:
    ref = init_dataset(root, "big").dataset
    seqs = [f"{i:020b}".replace("0", "A").replace("1", "C") for i in range(SCAN_BATCH_ROWS + 100)]
    import_records(ref, pa.table({"sequence": seqs}))
    table = pq.read_table(ref.records)
    assert validate_dataset(ref).errors == []
    last = table.num_rows - 1
    doubled = pa.concat_tables([table.slice(0, 1), table.slice(1), table.slice(0, 1), table.slice(last)])
    _rewrite_records(ref, doubled, row_group_size=1_000)  # first row again, far beyond the first batch
    report = validate_dataset(ref)
    assert report.errors == ["records.parquet: 2 duplicate id(s)."]


def test_validate_checks_alphabets_and_lengths(dataset: DatasetRef) -> None:
    table = pq.read_table(dataset.records)
    seqs = table["sequence"].to_pylist()
    seqs[1] = seqs[1][:-1] + "Z"  # same length, a symbol outside dna_4 (id recomputed below)
    alphabets = table["alphabet"].to_pylist()
    alphabets[2] = "protein_20"  # does not fit bio_type dna
    lengths = table["length"].to_pylist()
    lengths[3] = lengths[3] + 1
    ids = [S.compute_id(b, s) for b, s in zip(table["bio_type"].to_pylist(), seqs, strict=True)]
    fixed = (
        table.set_column(0, "id", pa.array(ids, pa.string()))
        .set_column(2, "sequence", pa.array(seqs, pa.string()))
        .set_column(3, "alphabet", pa.array(alphabets, pa.string()))
        .set_column(4, "length", pa.array(lengths, pa.int32()))
    )
    _rewrite_records(dataset, fixed)
    errors = validate_dataset(dataset).errors
    assert errors == [
        "records.parquet: 1 row(s) have an unknown bio_type or an alphabet that does not fit it "
        "(first: row 3: bio_type 'dna', alphabet 'protein_20'). Known: dna: dna_4, dna_5; "
        "rna: rna_4, rna_5; protein: protein_20, protein_21.",
        "records.parquet: 1 sequence(s) contain symbols outside their alphabet (first: row 2, alphabet dna_4).",
        "records.parquet: 1 row(s) have a 'length' that is not the sequence length (first: row 4).",
    ]


def test_validate_reports_nulls_only_when_there_are_nulls(dataset: DatasetRef) -> None:
    table = pq.read_table(dataset.records)
    _rewrite_records(dataset, table.set_column(2, "sequence", pa.array([None, "A", "C", None], pa.string())))
    assert validate_dataset(dataset).errors == ["records.parquet: 2 null value(s) in 'sequence'."]


def _overlay_file(path: Path, table: pa.Table, key: str = "id", stamp: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {S.META_OVERLAY_NAMESPACE: path.parent.name if path.parent.name != "_derived" else path.stem}
    meta[S.META_OVERLAY_KEY] = key
    if stamp is not None:
        meta[S.META_REGISTRY_HASH] = stamp
    pq.write_table(table.replace_schema_metadata(meta), path)


def test_validate_overlay_keys_and_tombstones(dataset: DatasetRef) -> None:
    ids = pq.read_table(dataset.records, columns=["id"])["id"].to_pylist()
    derived = dataset.dir / "_derived"
    _overlay = functools.partial(_overlay_file, stamp=registry_hash(dataset.root))
    _overlay(
        derived / "infer" / "part-a.parquet",
        pa.table({"id": [ids[0], ids[1], ids[0]], "infer__ll": [1.0, 2.0, 3.0]}),
    )
    _overlay(derived / "infer" / "part-b.parquet", pa.table({"infer__ll": [1.0]}), key="id")
    _overlay(
        derived / "infer" / "part-c.parquet",
        pa.table({"id": pa.array([None, ids[2]], pa.string()), "infer__ll": [1.0, 2.0]}),
    )
    when = pa.array([1_700_000_000_000_000], pa.timestamp("us", tz="UTC"))
    good = {"id": [ids[3]], "usr__deleted": [True], "usr__deleted_at": when, "usr__deleted_reason": ["x"]}
    _overlay(derived / "usr.parquet", pa.table(good))
    errors = validate_dataset(dataset).errors
    assert errors == [
        "_derived/infer/part-a.parquet: 1 repeated key(s) in 'id' (sample: "
        f"{ids[0]}). Each overlay file holds one row per key; rewrite it.",
        "_derived/infer/part-b.parquet: Overlay has no key column 'id'. Remove or rewrite it.",
        "_derived/infer/part-c.parquet: 1 row(s) have no key ('id' is null).",
    ]  # the tombstone overlay is checked against the public schema, not the registry: fine
    bad = {**good, "usr__deleted": ["yes"]}
    _overlay(derived / "usr.parquet", pa.table({k: v for k, v in bad.items() if k != "usr__deleted_reason"}))
    errors = validate_dataset(dataset).errors
    assert "_derived/usr.parquet: tombstone column 'usr__deleted' is string, expected bool." in errors
    assert "_derived/usr.parquet: tombstone overlay is missing the 'usr__deleted_reason' column." in errors


def test_validate_streams_in_bounded_memory_without_pandas(root: Path) -> None:
    ref = init_dataset(root, "big").dataset
    rng = random.Random(9)
    dna = bytes.maketrans(bytes(range(256)), b"ACGT" * 64)
    seqs = [rng.randbytes(1_000).translate(dna).decode() for _ in range(60_000)]
    import_records(ref, pa.table({"sequence": seqs}))
    meta = pq.ParquetFile(ref.records).metadata
    uncompressed = sum(
        meta.row_group(r).column(i).total_uncompressed_size
        for r in range(meta.num_row_groups)
        for i in range(meta.row_group(r).num_columns)
    )
    code = (
        "import json, sys, pyarrow as pa\n"
        "from usrbatch.dataset.catalog import validate_dataset\n"
        "from usrbatch.dataset.ref import as_dataset\n"
        f"r = validate_dataset(as_dataset({str(ref.dir)!r}))\n"
        "print(json.dumps({'peak': pa.default_memory_pool().max_memory(), 'errors': r.errors,\n"
        "  'pandas': 'pandas' in sys.modules}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["errors"] == []
    # the full read before held all of it, and more (190 MB here); now a batch and a page at a time
    assert got["peak"] < uncompressed / 3, (got, uncompressed)
    assert not got["pandas"]


def test_validate_reports_a_damaged_data_page(dataset: DatasetRef) -> None:
    data = bytearray(dataset.records.read_bytes())
    data[4:200] = b"\xff" * 196  # the first pages; the footer stays readable
    dataset.records.write_bytes(bytes(data))
    errors = validate_dataset(dataset).errors
    assert len(errors) == 1 and "records.parquet: not a readable parquet file" in errors[0]


def test_validate_refuses_overlays_without_stamps_or_stamped_by_another_registry(dataset: DatasetRef) -> None:
    """The public default (`current`): an overlay must carry `usr:overlay_key` and the hash of the
    registry as it is now; `frozen` accepts the hash records.parquet was frozen with."""
    ids = pq.read_table(dataset.records, columns=["id"])["id"].to_pylist()
    derived = dataset.dir / "_derived"
    before = registry_hash(dataset.root)
    write_overlay_part(dataset, "infer", [{"id": ids[0], "ll": 1.0}])
    assert validate_dataset(dataset).errors == []
    register_namespace(dataset.root, "later", "later__x:float64")
    report = validate_dataset(dataset)
    assert len(report.errors) == 1 and report.errors[0].startswith("Overlay registry_hash mismatch for ")
    assert f": {before} not in [{registry_hash(dataset.root)}]." in report.errors[0]
    for mode in ("frozen", "either", "namespace-current", "namespace-frozen", "namespace-either"):
        assert validate_dataset(dataset, registry_mode=mode).errors == [], mode
    pq.write_table(pa.table({"id": [ids[1]], "infer__ll": [2.0]}), derived / "infer.parquet")
    errors = validate_dataset(dataset, registry_mode="frozen").errors
    assert errors == [f"Overlay missing required metadata key: {derived / 'infer.parquet'}"]


def test_validate_refuses_records_columns_that_are_not_namespaced(dataset: DatasetRef) -> None:
    table = pq.read_table(dataset.records)
    _rewrite_records(dataset, table.append_column("score", pa.array([1.0] * table.num_rows)))
    errors = validate_dataset(dataset).errors
    assert errors == ["Derived columns must be namespaced as '<tool>__<field>'. Offending columns: score"]
    _rewrite_records(dataset, table.append_column("infer__ll", pa.array([1.0] * table.num_rows)))
    assert validate_dataset(dataset).errors == [] and validate_dataset(dataset, strict=True).errors == []
    _rewrite_records(dataset, table.append_column("infer__ll", pa.array(["x"] * table.num_rows)))
    assert validate_dataset(dataset).errors == []  # materialized columns: checked under --strict only
    assert validate_dataset(dataset, strict=True).errors == [
        "Materialized base columns failed strict registry validation. current: "
        "Overlay column 'infer__ll' type mismatch: expected float64, got string."
    ]
