from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from usrbatch.dataset import schema as S
from usrbatch.dataset.overlays import read_dataset, write_overlay_part
from usrbatch.dataset.preview import (
    ellipsize,
    format_cell,
    head_dataset,
    rank_columns,
    render_table,
    table_rows,
)
from usrbatch.dataset.records import import_records, init_dataset
from usrbatch.dataset.ref import DatasetRef
from usrbatch.dataset.registry import register_namespace
from usrbatch.dataset.scan import MIN_SCAN_ROWS
from usrbatch.errors import DatasetError, SchemaError


def test_rank_columns_follows_the_public_order() -> None:
    names = ["zeta", "sequence", "id", "a__label", "b__primary", "usr_label__primary", "alpha"]
    assert rank_columns(names) == [
        "id",
        "usr_label__primary",
        "b__primary",
        "a__label",
        "sequence",
        "alpha",
        "zeta",
    ]


def test_cells_are_prettified() -> None:
    assert format_cell(None) == "∅"
    assert format_cell(True) == "true"
    assert format_cell(1.234567) == "1.2346"
    assert format_cell(2.5) == "2.5"
    assert format_cell(3.0) == "3"
    assert format_cell(0.00001234) == "1.234e-05"
    assert format_cell(12345678.0) == "1.235e+07"
    assert format_cell([1.0, 2.5, 3.0], max_items=2) == "vec[3] [1, 2.5, …]"
    assert format_cell({"a": 1, "b": None}) == "{ a: 1, b: ∅ }"
    assert ellipsize("x" * 10, 5) == "xxxx…"


def test_render_table_strips_trailing_whitespace() -> None:
    out = render_table(["id", "v"], [["a", ""], ["bb", "1"]])
    assert out.splitlines() == ["id  v", "a", "bb  1"]


# ---------------------------------------------------------------------------------------------
# head_dataset: bounded reads, tombstones, last-writer-wins


def _ids(ref: DatasetRef) -> list[str]:
    return pq.read_table(ref.records, columns=["id"])["id"].to_pylist()


def _write_overlay_file(path: Path, table: pa.Table, *, namespace: str, key: str, created_at: str) -> None:
    """An overlay file as the public tool writes it (metadata keys of usr-contract §12)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        S.META_OVERLAY_NAMESPACE: namespace,
        S.META_OVERLAY_KEY: key,
        S.META_OVERLAY_CREATED_AT: created_at,
    }
    pq.write_table(table.replace_schema_metadata(meta), path)


def _tombstones(
    ref: DatasetRef, ids: list[str], deleted: bool, *, created_at: str, part: str | None = None
) -> None:
    """The public tool's tombstone/restore overlay rows (reserved namespace `usr`)."""
    table = pa.table(
        {
            "id": pa.array(ids, pa.string()),
            "usr__deleted": pa.array([deleted] * len(ids), pa.bool_()),
            "usr__deleted_at": pa.array(
                [1_700_000_000_000_000 if deleted else None] * len(ids), pa.timestamp("us", tz="UTC")
            ),
            "usr__deleted_reason": pa.array(["bad" if deleted else None] * len(ids), pa.string()),
        }
    )
    derived = ref.dir / "_derived"
    path = derived / "usr.parquet" if part is None else derived / "usr" / f"part-{part}.parquet"
    _write_overlay_file(path, table, namespace="usr", key="id", created_at=created_at)


def _big_dataset(root: Path, rows: int, *, length: int = 200, row_group_size: int = 500) -> DatasetRef:
    """A dataset of `rows` random sequences whose records.parquet has many small row groups."""
    rng = random.Random(5)
    ref = init_dataset(root, "big").dataset
    register_namespace(root, "infer", "infer__ll:float64,infer__label:string")
    seqs = {"".join(rng.choices("ACGT", k=length)) for _ in range(rows)}
    import_records(ref, pa.table({"sequence": sorted(seqs)}))
    table = pq.read_table(ref.records)
    pq.write_table(table, ref.records, row_group_size=row_group_size)
    return ref


def test_head_reads_the_first_rows_only(root: Path) -> None:
    ref = _big_dataset(root, 20_000)
    assert pq.ParquetFile(ref.records).metadata.num_row_groups == 40
    ids = _ids(ref)
    write_overlay_part(ref, "infer", pa.table({"id": ids[:3], "ll": [1.0, 2.0, 3.0]}))
    result = head_dataset(ref, 5, ["infer__ll"])
    assert result.columns == ["id", "infer__ll"]
    assert result.table["id"].to_pylist() == ids[:5]
    assert result.table["infer__ll"].to_pylist() == [1.0, 2.0, 3.0, None, None]
    assert result.base_rows_read == MIN_SCAN_ROWS  # one small batch of 20,000 rows
    big = head_dataset(ref, 1_000)
    assert big.base_rows_read == 1_000 and big.table.num_rows == 1_000
    assert head_dataset(ref, 0).table.num_rows == 0


def _run_isolated(code: str) -> dict:
    """Run `code` in a fresh interpreter (which prints a JSON line) and return that line."""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_head_memory_stays_far_below_the_table(root: Path) -> None:
    ref = _big_dataset(root, 20_000, length=1_000)
    uncompressed = sum(
        rg.column(i).total_uncompressed_size
        for meta in [pq.ParquetFile(ref.records).metadata]
        for rg in (meta.row_group(r) for r in range(meta.num_row_groups))
        for i in range(rg.num_columns)
    )
    ids = _ids(ref)
    for start in range(0, len(ids), 5_000):  # overlay parts covering every row
        write_overlay_part(ref, "infer", pa.table({"id": ids[start : start + 5_000], "label": ["x"] * 5_000}))
    got = _run_isolated(
        "import json, sys, pyarrow as pa\n"
        "from usrbatch.dataset.preview import head_dataset\n"
        f"r = head_dataset({str(ref.dir)!r}, 10)\n"
        "print(json.dumps({'peak': pa.default_memory_pool().max_memory(), 'rows': r.table.num_rows,\n"
        "  'pandas': 'pandas' in sys.modules}))\n"
    )
    assert got["rows"] == 10
    assert got["peak"] < uncompressed / 4, (got, uncompressed)  # the old full read needed > uncompressed
    assert not got["pandas"]  # pyarrow imports pandas (~0.5 s, ~50 MB) for Python-built values


def test_head_hides_tombstoned_rows_and_shows_the_next(dataset: DatasetRef) -> None:
    ids = _ids(dataset)
    _tombstones(dataset, ids[:2], True, created_at="2026-01-01T00:00:00.000000Z")
    result = head_dataset(dataset, 2)
    assert result.table["id"].to_pylist() == ids[2:4]
    assert not any(c.startswith("usr__") for c in result.columns)
    everything = head_dataset(dataset, 4, include_deleted=True, max_columns=20)
    assert everything.table["id"].to_pylist() == ids
    assert everything.table["usr__deleted"].to_pylist() == [True, True, None, None]
    with pytest.raises(
        SchemaError, match=r"Tombstone column\(s\) usr__deleted are shown only with --include-deleted"
    ):
        head_dataset(dataset, 2, ["usr__deleted"])
    assert head_dataset(dataset, 2, ["usr__deleted_reason"], include_deleted=True).table.to_pylist() == [
        {"id": ids[0], "usr__deleted_reason": "bad"},
        {"id": ids[1], "usr__deleted_reason": "bad"},
    ]


def test_head_restore_is_last_writer_wins(dataset: DatasetRef) -> None:
    ids = _ids(dataset)
    _tombstones(dataset, ids[:3], True, created_at="2026-01-01T00:00:00.000000Z", part="a")
    _tombstones(dataset, [ids[1]], False, created_at="2026-01-02T00:00:00.000000Z", part="b")  # restore
    assert head_dataset(dataset, 10).table["id"].to_pylist() == [ids[1], ids[3]]


def test_read_dataset_and_infer_leave_out_tombstoned_rows(tmp_path: Path) -> None:
    """read_dataset(include_deleted=False) applies the same rule as head (restore wins when newer),
    and the Infer step, which reads that way, scores only live rows."""
    from usrbatch.steps import infer

    dataset = init_dataset(tmp_path / "fresh", "ns/live").dataset
    import_records(
        dataset, [{"sequence": s} for s in ("ACGTACGTAA", "GGGCCCTTTA", "ATATATATAT", "CCCCGGGGAA")]
    )
    ids = _ids(dataset)
    _tombstones(dataset, ids[:3], True, created_at="2026-01-01T00:00:00.000000Z", part="a")
    _tombstones(dataset, [ids[1]], False, created_at="2026-01-02T00:00:00.000000Z", part="b")
    assert read_dataset(dataset)["id"].to_pylist() == ids  # default: every row
    assert read_dataset(dataset, include_deleted=False)["id"].to_pylist() == [ids[1], ids[3]]
    counts = infer.run(dataset.root, dataset.dataset_id)
    assert counts["scored"] == 2
    scored = read_dataset(dataset, [infer.PREFIX + "ll_sum"])
    assert [
        i for i, v in zip(ids, scored[infer.PREFIX + "ll_sum"].to_pylist(), strict=True) if v is not None
    ] == [
        ids[1],
        ids[3],
    ]


def test_head_skips_a_long_tombstoned_prefix_across_batches(root: Path) -> None:
    ref = _big_dataset(root, 10_000, length=30)
    ids = _ids(ref)
    _tombstones(ref, ids[:2_500], True, created_at="2026-01-01T00:00:00.000000Z")
    result = head_dataset(ref, 5, ["sequence"])
    assert result.table["id"].to_pylist() == ids[2_500:2_505]
    # runs of 256, 512, 1024, 2048 rows: each run is one tombstone scan, and the reads stop there
    assert result.base_rows_read == 256 + 512 + 1024 + 2048


def test_head_matches_read_dataset_last_writer_wins(dataset: DatasetRef) -> None:
    """Parts, a compact file keyed by sequence, repeated ids in one part and null overrides: head
    and the full read (read_dataset) agree cell for cell on the rows head shows."""
    ids = _ids(dataset)
    seqs = pq.read_table(dataset.records, columns=["sequence"])["sequence"].to_pylist()
    _write_overlay_file(
        dataset.dir / "_derived" / "infer.parquet",
        pa.table(
            {"sequence": [seqs[0].lower(), seqs[2]], "infer__ll": [0.5, 0.25], "infer__label": ["c", "c"]}
        ),
        namespace="infer",
        key="sequence_ci",
        created_at="2026-01-01T00:00:00.000000Z",
    )
    write_overlay_part(
        dataset, "infer", [{"id": ids[0], "ll": 1.0}, {"id": ids[1], "ll": 2.0, "label": "p1"}]
    )
    part = write_overlay_part(dataset, "infer", [{"id": ids[1], "label": "p2"}, {"id": ids[3], "n": 7}])
    repeated = pa.table({"id": [ids[3], ids[3]], "infer__n": pa.array([8, 9], pa.int64())})
    _write_overlay_file(  # a later part holding id 3 twice: its last row wins
        part.path.with_name("part-99990101T000000000000Z-0.parquet"),
        repeated,
        namespace="infer",
        key="id",
        created_at="9999-01-01T00:00:00.000000Z",
    )
    write_overlay_part(dataset, "infer", pa.table({"id": [ids[0]], "infer__label": pa.nulls(1, pa.string())}))
    columns = ["infer__ll", "infer__label", "infer__n", "sequence"]
    full = read_dataset(dataset, columns)
    for n in range(5):
        got = head_dataset(dataset, n, columns).table
        assert got.to_pylist() == full.slice(0, n).to_pylist()
    rows = head_dataset(dataset, 4, columns).table.to_pylist()
    assert [r["infer__ll"] for r in rows] == [1.0, 2.0, 0.25, None]
    assert [r["infer__label"] for r in rows] == [None, "p2", "c", None]
    assert [r["infer__n"] for r in rows] == [None, None, None, 9]


def test_head_column_errors_list_what_exists(dataset: DatasetRef) -> None:
    write_overlay_part(dataset, "infer", [{"id": _ids(dataset)[0], "ll": 1.0}])
    with pytest.raises(
        SchemaError, match=r"Unknown column\(s\) nope in dataset 'ns/demo'\. Available: id, .*infer__ll\."
    ):
        head_dataset(dataset, 2, ["nope"])
    default = head_dataset(dataset, 1)
    assert default.columns == rank_columns(default.columns) and len(default.columns) == 6


def test_table_rows_converts_utc_timestamps_like_to_pylist() -> None:
    table = pa.table(
        {
            "t": pa.array([1_700_000_000_123_456, None], pa.timestamp("us", tz="UTC")),
            "n": pa.array([1_700_000_000_000, 5], pa.timestamp("ms")),
            "s": ["a", None],
        }
    )
    assert table_rows(table) == table.to_pylist()
    assert format_cell(table_rows(table)[0]["t"]) == "2023-11-14T22:13:20.123456+00:00"


def test_head_damaged_data_page_is_a_dataset_error(dataset: DatasetRef) -> None:
    data = bytearray(dataset.records.read_bytes())
    data[4:200] = b"\xff" * 196  # the first pages; the footer stays readable
    dataset.records.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=r"records\.parquet is not a readable parquet file"):
        head_dataset(dataset, 2)
