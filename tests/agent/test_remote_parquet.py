"""The agent's stdlib parquet footer reader (Thrift Compact FileMetaData) against pyarrow.

pyarrow writes the files and cross-checks the answer; the agent never imports it.
"""

from __future__ import annotations

import datetime
import io
import os
import struct
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from usrbatch.agent import remote as agent
from usrbatch.dataset.records import import_records, init_dataset


def _expected(path: Path) -> list[int]:
    md = pq.ParquetFile(path).metadata
    return [md.num_rows, md.num_columns]


def _tables() -> dict[str, tuple[pa.Table, dict]]:
    n = 50_000
    ts = [
        datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC) + datetime.timedelta(seconds=i) for i in range(7)
    ]
    return {
        "empty-table": (pa.table({}), {}),
        "zero-rows": (pa.table({"a": pa.array([], pa.int64()), "b": pa.array([], pa.string())}), {}),
        "nested": (
            pa.table(
                {
                    "l": [[1, 2], [3], []],
                    "ll": [[[1.5]], [], [[2.5, 3.5], []]],
                    "s": [{"x": 1, "y": {"z": "a", "w": [True]}}, None, {"x": 3, "y": None}],
                    "m": pa.array([[("k", 1)], [], [("a", 2), ("b", 3)]], pa.map_(pa.string(), pa.int32())),
                    "flat": ["p", "q", "r"],
                }
            ),
            {},
        ),
        "many-row-groups": (
            pa.table({"a": list(range(n)), "b": [str(i) for i in range(n)]}),
            {"row_group_size": 997},
        ),
        "dictionary": (
            pa.table({"d": pa.array(["x", "y", "z"] * 4000).dictionary_encode(), "v": list(range(12000))}),
            {"use_dictionary": True},
        ),
        "timestamps": (
            pa.table(
                {
                    "t_us": pa.array(ts, pa.timestamp("us", tz="UTC")),
                    "t_ms": pa.array(ts, pa.timestamp("ms")),
                    "d": pa.array([datetime.date(2021, 1, i + 1) for i in range(7)]),
                }
            ),
            {},
        ),
        "wide-with-metadata-v2-pages": (
            pa.table({f"c{i}": [i, None, i * 2] for i in range(300)}).replace_schema_metadata(
                {"usr": "x" * 10_000}
            ),
            {"data_page_version": "2.0", "compression": "zstd", "write_statistics": True},
        ),
        "no-statistics-uncompressed": (
            pa.table({"b": [b"\x00\xff" * 10, None], "f": [1.25, -0.0], "ok": [True, False]}),
            {"compression": "none", "write_statistics": False},
        ),
    }


@pytest.mark.parametrize("name", sorted(_tables()))
def test_footer_shape_equals_pyarrow(tmp_path: Path, name: str) -> None:
    table, kw = _tables()[name]
    path = tmp_path / f"{name}.parquet"
    pq.write_table(table, path, **kw)
    assert agent.parquet_shape(str(path)) == _expected(path)


def test_real_records_parquet_of_a_built_dataset(tmp_path: Path) -> None:
    init_dataset(tmp_path, "ns/demo")
    records = tmp_path / "ns" / "demo" / "records.parquet"
    assert agent.parquet_shape(str(records)) == _expected(records)  # 0 rows, core schema
    import_records(tmp_path / "ns" / "demo", [{"sequence": s} for s in ("ACGTACGTAA", "GGGCCCTTTA", "TTTT")])
    shape = agent.parquet_shape(str(records))
    assert shape == _expected(records) and shape[0] == 3


def _footer_len(path: Path) -> int:
    data = path.read_bytes()
    return struct.unpack("<I", data[-8:-4])[0]


def test_truncated_and_corrupt_files_give_none(tmp_path: Path) -> None:
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"a": list(range(1000)), "b": ["x"] * 1000}), good)
    data = good.read_bytes()
    flen = _footer_len(good)
    variants = {
        "empty": b"",
        "magic-only": b"PAR1",
        "head-cut": data[100:],
        "tail-cut": data[:-1],
        "half": data[: len(data) // 2],
        "footer-cut": data[: -8 - flen // 2] + data[-8:],  # length now points before the header
        "len-too-big": data[:-8] + struct.pack("<I", len(data)) + b"PAR1",
        "len-zero": data[:-8] + struct.pack("<I", 0) + b"PAR1",
        "encrypted-magic": data[:-4] + b"PARE",
        "footer-tail-damaged": data[:-20] + b"\xff" * 12 + data[-8:],  # schema/rows intact, rest not
        "garbage-footer": data[: -8 - flen] + b"\xff" * flen + data[-8:],
        "stop-only-footer": data[: -8 - flen] + b"\x00" * flen + data[-8:],
        "not-parquet": b"not parquet at all, just text\n" * 10,
    }
    for name, blob in variants.items():
        p = tmp_path / f"{name}.bin"
        p.write_bytes(blob)
        assert agent.parquet_shape(str(p)) is None, name
    assert agent.parquet_shape(str(tmp_path / "missing.parquet")) is None
    assert agent.parquet_shape(str(tmp_path)) is None  # a directory
    os.symlink(good, tmp_path / "link.parquet")
    assert agent.parquet_shape(str(tmp_path / "link.parquet")) is None  # never follows a symlink


def test_every_single_byte_corruption_of_the_footer_is_handled(tmp_path: Path) -> None:
    """Flip each footer byte: the answer is None or a pair of ints, never an exception."""
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"a": [1, 2, 3], "s": [{"x": 1}, None, {"x": 2}]}), good)
    data = bytearray(good.read_bytes())
    flen = _footer_len(good)
    start = len(data) - 8 - flen
    bad = tmp_path / "bad.parquet"
    for i in range(start, len(data) - 8):
        for value in (0x00, 0xFF, data[i] ^ 0x10):
            copy = bytearray(data)
            copy[i] = value
            bad.write_bytes(bytes(copy))
            got = agent.parquet_shape(str(bad))
            assert got is None or (len(got) == 2 and all(isinstance(v, int) and v >= 0 for v in got))


class _CountingFile(io.BufferedReader):
    """A real file that counts the bytes handed out to the parser."""

    read_total = 0

    def read(self, n: int | None = -1) -> bytes:  # type: ignore[override]
        data = super().read(n)
        self.read_total += len(data)
        return data


def test_only_the_footer_is_read(tmp_path: Path) -> None:
    path = tmp_path / "big.parquet"
    table = pa.table({"blob": [os.urandom(1024) for _ in range(20_000)], "n": list(range(20_000))})
    pq.write_table(table, path, row_group_size=5000, compression="none")
    size = path.stat().st_size
    assert size > 20_000_000
    flen = _footer_len(path)
    with _CountingFile(io.FileIO(path, "rb"), buffer_size=64) as fh:
        assert list(agent.read_parquet_footer_shape(fh, size)) == _expected(path)
        assert fh.read_total <= 4 + 8 + flen  # head magic, tail, footer: nothing of the data
    assert flen < 64 * 1024


# A tiny Thrift Compact writer, only to build footers with every field type the reader must skip.


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _zz(n: int) -> bytes:
    return _varint((n << 1) ^ (n >> 63))


def _fh(fid: int, ctype: int, last: int) -> bytes:
    delta = fid - last
    if 0 < delta <= 15:
        return bytes([(delta << 4) | ctype])
    return bytes([ctype]) + _zz(fid)  # long form


def _list_header(size: int, etype: int) -> bytes:
    return bytes([(size << 4) | etype]) if size < 15 else bytes([0xF0 | etype]) + _varint(size)


def _struct(fields: list[tuple[int, int, bytes]]) -> bytes:
    out = bytearray()
    last = 0
    for fid, ctype, payload in fields:
        out += _fh(fid, ctype, last) + payload
        last = fid
    return bytes(out) + b"\x00"


def _binary(b: bytes) -> bytes:
    return _varint(len(b)) + b


def _schema_element(name: str, children: int | None, extra: list[tuple[int, int, bytes]] = ()) -> bytes:
    fields: list[tuple[int, int, bytes]] = [(1, 5, _zz(6))] if children is None else []
    fields.append((4, 8, _binary(name.encode())))
    if children is not None:
        fields.append((5, 5, _zz(children)))
    fields.extend(extra)
    return _struct(fields)


def _every_type_fields() -> list[tuple[int, int, bytes]]:
    inner = _struct([(1, 1, b""), (2, 2, b""), (3, 6, _zz(-5))])
    return [
        (20, 1, b""),  # bool true (value in the header)
        (21, 2, b""),  # bool false
        (22, 3, b"\x7f"),  # byte
        (23, 4, _zz(-300)),  # i16
        (24, 5, _zz(2**31 - 1)),  # i32
        (25, 6, _zz(-(2**62))),  # i64
        (26, 7, struct.pack("<d", 3.5)),  # double
        (27, 8, _binary(b"\x00" * 40)),  # binary
        (28, 9, _list_header(3, 1) + b"\x01\x02\x01"),  # list<bool>: one byte each
        (29, 10, _list_header(2, 5) + _zz(1) + _zz(-1)),  # set<i32>
        (30, 9, _list_header(20, 6) + b"".join(_zz(i) for i in range(20))),  # long list header
        (31, 9, _list_header(2, 12) + inner + inner),  # list<struct>
        (
            32,
            11,
            _varint(2)
            + bytes([(8 << 4) | 9])
            + _binary(b"k")
            + _list_header(1, 6)
            + _zz(7)
            + _binary(b"j")
            + _list_header(0, 6),
        ),  # map<binary, list<i64>>
        (33, 11, _varint(0)),  # empty map: no type byte
        (34, 12, _struct([(1, 12, inner), (40, 7, struct.pack("<d", 1.0))])),  # nested struct
        (35, 9, _list_header(1, 9) + _list_header(2, 7) + b"\x00" * 16),  # list<list<double>>
    ]


def _write_footer(path: Path, footer: bytes) -> None:
    path.write_bytes(b"PAR1" + b"\x00" * 32 + footer + struct.pack("<I", len(footer)) + b"PAR1")


def test_unknown_fields_of_every_compact_type_are_skipped(tmp_path: Path) -> None:
    odd = _every_type_fields()
    schema = [
        _schema_element("root", 2, odd[:3]),
        _schema_element("a", None, odd),
        _schema_element("g", 1),
        _schema_element("c", None, [(9, 12, _struct(odd))]),
    ]
    meta = _struct(
        [
            (1, 5, _zz(2)),
            *odd,  # long-form ids 20..35 BEFORE the fields the reader wants
            (2, 9, _list_header(len(schema), 12) + b"".join(schema)),
            (3, 6, _zz(123_456_789_012)),
            (4, 9, _list_header(0, 12)),
        ]
    )
    path = tmp_path / "handmade.parquet"
    _write_footer(path, meta)
    assert agent.parquet_shape(str(path)) == [123_456_789_012, 2]  # leaves a and c, not root or g


def test_footer_without_num_rows_or_with_wrong_types_is_none(tmp_path: Path) -> None:
    schema = _list_header(1, 12) + _schema_element("root", 0)
    cases = {
        "no-rows": _struct([(1, 5, _zz(1)), (2, 9, schema)]),
        "no-schema": _struct([(3, 6, _zz(5))]),
        "schema-not-structs": _struct([(2, 9, _list_header(1, 5) + _zz(1)), (3, 6, _zz(5))]),
        "negative-rows": _struct([(2, 9, schema), (3, 6, _zz(-1))]),
        "unknown-type-13": _struct([(1, 13, b"")]),
        "deep-nesting": b"\x1c" * 200 + b"\x00" * 200,
    }
    for name, footer in cases.items():
        path = tmp_path / f"{name}.parquet"
        _write_footer(path, footer)
        assert agent.parquet_shape(str(path)) is None, name
    ok = tmp_path / "ok.parquet"
    _write_footer(ok, _struct([(2, 9, schema), (3, 6, _zz(5))]))
    assert agent.parquet_shape(str(ok)) == [5, 0]


def test_footer_reader_runs_without_pyarrow_importable(tmp_path: Path) -> None:
    """The agent answers rows/cols in a python where `import pyarrow` fails."""
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"a": [1, 2], "b": [[1], [2, 3]]}), path, row_group_size=1)
    expected = _expected(path)
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "pyarrow.py").write_text("raise ImportError('no pyarrow here')\n")
    code = (
        "import sys, json; sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[2]);"
        "import remote; print(json.dumps(remote.inventory(sys.argv[3], True, True, sys.argv[4])['primary_shape']))"
    )
    ds = tmp_path / "ds"
    ds.mkdir()
    os.replace(path, ds / "records.parquet")
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            str(Path(agent.__file__).parent),
            str(blocker),
            str(ds),
            str(tmp_path / "c.json"),
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": ""},
    )
    assert out.stdout.strip() == str(expected) == "[2, 2]"


# ---------------------------------------------------------------------------------------------
# Payload validation: complete files, the core schema, overlay key columns, UTF-8 meta.md.


def _core_table(n: int = 3, **override: pa.Array) -> pa.Table:
    from usrbatch.dataset.schema import CORE_SCHEMA

    seqs = ["ACGT" * (i + 1) for i in range(n)]
    cols = {
        "id": pa.array([f"id{i}" for i in range(n)], pa.string()),
        "bio_type": pa.array(["dna"] * n, pa.string()),
        "sequence": pa.array(seqs, pa.string()),
        "alphabet": pa.array(["dna_4"] * n, pa.string()),
        "length": pa.array([len(s) for s in seqs], pa.int32()),
        "source": pa.array(["t"] * n, pa.string()),
        "created_at": pa.array(
            [datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)] * n, CORE_SCHEMA.field(6).type
        ),
    }
    cols.update(override)
    return pa.table(cols)


def _problem(tmp_path: Path, table: pa.Table, kind: str, name: str = "t.parquet", **kw) -> str | None:
    path = tmp_path / name
    pq.write_table(table, path, **kw)
    return agent.payload_problem(str(path), kind)


def test_core_columns_are_the_dataset_core_schema() -> None:
    from usrbatch.dataset.schema import CORE_SCHEMA

    def arrow_words(t: pa.DataType) -> str:
        return "timestamp[us, UTC]" if pa.types.is_timestamp(t) else str(t)

    assert tuple((f.name, arrow_words(f.type)) for f in CORE_SCHEMA) == agent.CORE_COLUMNS
    assert CORE_SCHEMA.field("created_at").type == pa.timestamp("us", tz="UTC")


def test_records_of_real_datasets_and_extra_columns_are_valid(tmp_path: Path) -> None:
    init_dataset(tmp_path, "ns/demo")
    ds = tmp_path / "ns" / "demo"
    assert agent.payload_problem(str(ds / "records.parquet"), "records") is None  # 0 rows, 1 empty row group
    import_records(ds, [{"sequence": s} for s in ("ACGTACGTAA", "GGGCCCTTTA")])
    assert agent.payload_problem(str(ds / "records.parquet"), "records") is None
    for snap in (ds / "_snapshots").iterdir():
        assert agent.payload_problem(str(snap), "snapshot") is None
    assert agent.payload_problem(str(ds / "meta.md"), "meta") is None
    wide = _core_table(4, mock__score=pa.array([0.5] * 4), vec=pa.array([[1.0]] * 4))
    for kw in (
        {},
        {"row_group_size": 1},
        {"compression": "none", "use_dictionary": False},
        {"data_page_version": "2.0"},
    ):
        assert _problem(tmp_path, wide, "records", **kw) is None, kw
    assert _problem(tmp_path, _core_table(0), "records") is None
    untyped = _core_table(0, id=pa.array([], pa.null()))
    assert _problem(tmp_path, untyped, "records") == "has core column 'id' as null, expected string"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"length": pa.array([1, 2, 3], pa.int64())}, "has core column 'length' as int64, expected int32"),
        ({"length": pa.array([1, 2, 3], pa.int16())}, "has core column 'length' as int16, expected int32"),
        ({"id": pa.array([1, 2, 3], pa.int64())}, "has core column 'id' as int64, expected string"),
        (
            {"sequence": pa.array([b"A", b"C", b"G"], pa.binary())},
            "has core column 'sequence' as binary, expected string",
        ),
        (
            {"created_at": pa.array([datetime.datetime(2026, 1, 1)] * 3, pa.timestamp("ms"))},
            "has core column 'created_at' as timestamp[ms], expected timestamp[us, UTC]",
        ),
        (
            {"created_at": pa.array([datetime.datetime(2026, 1, 1)] * 3, pa.timestamp("us"))},
            "has core column 'created_at' as timestamp[us], expected timestamp[us, UTC]",
        ),
        ({"bio_type": pa.array([["dna"]] * 3)}, "has core column 'bio_type' as list, expected string"),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 40 else None,
)
def test_records_with_a_wrong_core_type_are_refused(tmp_path: Path, override: dict, expected: str) -> None:
    assert _problem(tmp_path, _core_table(3, **override), "records") == expected


def test_records_missing_a_core_column_names_it_and_what_is_there(tmp_path: Path) -> None:
    assert _problem(tmp_path, _core_table(2).drop_columns(["alphabet"]), "records") == (
        "lacks core column 'alphabet' (columns: bio_type, created_at, id, length, sequence, source)"
    )
    assert _problem(tmp_path, pa.table({"x": [1]}), "records") == "lacks core column 'id' (columns: x)"
    # a nested column named like a core one is not the core column
    nested = _core_table(1).drop_columns(["source"]).append_column("source", pa.array([{"a": 1}]))
    assert _problem(tmp_path, nested, "records") == "has core column 'source' as struct, expected string"


@pytest.mark.parametrize(
    ("table", "key", "expected"),
    [
        (pa.table({"id": ["a"], "ns__x": [1.0]}), "id", None),
        (pa.table({"id": ["a"], "ns__x": [1.0]}), None, None),
        (pa.table({"sequence": ["ACGT"], "ns__x": [1.0]}), "sequence", None),
        (pa.table({"sequence": ["ACGT"], "ns__x": [1.0]}), None, None),
        (pa.table({"sequence": ["ACGT"], "ns__x": [1.0]}), "sequence_ci", None),
        (pa.table({"sequence_norm": ["ACGT"], "ns__x": [1.0]}), "sequence_norm", None),
        (pa.table({"ns__x": [1.0]}), None, "has no key column 'id' or 'sequence'"),
        (pa.table({"sequence": ["ACGT"], "ns__x": [1.0]}), "id", "has no key column 'id'"),
        (pa.table({"id": [1], "ns__x": [1.0]}), "id", "has key column 'id' as int64, expected string"),
        (
            pa.table({"id": ["a"]}),
            "name",
            "declares usr:overlay_key 'name', not one of id, sequence, sequence_norm, sequence_ci",
        ),
    ],
)
def test_overlay_key_column(tmp_path: Path, table: pa.Table, key: str | None, expected: str | None) -> None:
    if key is not None:
        table = table.replace_schema_metadata({"usr:overlay_key": key})
    assert _problem(tmp_path, table, "overlay") == expected


def test_public_tool_datasets_are_valid_payloads(tmp_path: Path) -> None:
    """Every records, overlay (sequence-keyed, parts, archived), snapshot and meta.md the public
    tool wrote (/work/shared/fixtures/public-usr) passes."""
    import tarfile

    fixture = Path("/work/shared/fixtures/public-usr/root.tar.gz")
    if not fixture.is_file():
        pytest.skip("public-usr fixtures not on this machine")
    with tarfile.open(fixture) as tar:
        tar.extractall(tmp_path, filter="data")
    seen: dict[str, int] = {}
    for records in (tmp_path / "root").rglob("records.parquet"):
        ds = records.parent
        for path in ds.rglob("*"):
            kind = agent.payload_kind(path.relative_to(ds).as_posix())
            if kind and path.is_file():
                assert agent.payload_problem(str(path), kind) is None, path
                seen[kind] = seen.get(kind, 0) + 1
    assert set(seen) == {"records", "overlay", "snapshot", "meta"} and seen["overlay"] >= 6


def test_payload_kind_of_dataset_paths() -> None:
    kinds = {
        "records.parquet": "records",
        "meta.md": "meta",
        "_derived/mock.parquet": "overlay",
        "_derived/infer/part-1.parquet": "overlay",
        "_derived/_archived/mock-20261126T121054068176Z.parquet": "overlay",
        "_snapshots/records-20261126T121054066735.parquet": "snapshot",
        "_snapshots/notes.parquet": None,
        "_derived/infer/digest_ledger.json": None,
        ".events.log": None,
        "_registry/registry.abc.yaml": None,
        "x/records.parquet": None,
    }
    assert {rel: agent.payload_kind(rel) for rel in kinds} == kinds


def test_incomplete_files_are_refused_with_what_is_wrong(tmp_path: Path) -> None:
    good = tmp_path / "good.parquet"
    pq.write_table(_core_table(2000), good, row_group_size=500)
    data = good.read_bytes()
    flen = _footer_len(good)
    footer = data[-8 - flen :]
    cases = {
        "empty": (b"", "file too small for parquet (0 bytes)"),
        "zero-filled": (b"\x00" * len(data), "missing head magic PAR1"),
        "junk": (os.urandom(4096), "missing head magic PAR1"),
        "tail-cut": (data[:-1], "missing tail magic PAR1"),
        "len-too-big": (data[:-8] + struct.pack("<I", len(data)) + b"PAR1", "footer length"),
        "spliced": (data[:200] + footer, "lies outside the data region (4.."),
        "data-cut": (data[: len(data) // 2] + footer, "lies outside the data region"),
        "footer-damaged": (data[:-20] + b"\xff" * 12 + data[-8:], "is not a complete parquet file"),
    }
    for name, (blob, expected) in cases.items():
        path = tmp_path / f"{name}.parquet"
        path.write_bytes(blob)
        for kind in ("records", "overlay", "snapshot"):
            got = agent.payload_problem(str(path), kind)
            assert got is not None and got.startswith("is not a complete parquet file: "), (name, got)
            assert expected in got, (name, got)
    assert agent.payload_problem(str(good), "records") is None
    os.symlink(good, tmp_path / "link.parquet")
    assert agent.payload_problem(str(tmp_path / "link.parquet"), "records").startswith("cannot be read")
    assert agent.payload_problem(str(tmp_path), "records") == "is not a regular file"
    with pytest.raises(agent.AgentError, match="unknown payload kind"):
        agent.payload_problem(str(good), "nope")


def test_footer_inconsistencies_are_refused(tmp_path: Path) -> None:
    """Handmade footers: the schema tree, the row groups and their chunks must agree."""
    leaf = _schema_element("a", None)
    schema1 = _list_header(2, 12) + _schema_element("root", 1) + leaf

    def chunk(offset: int, size: int) -> bytes:
        meta = _struct([(1, 5, _zz(6)), (5, 6, _zz(1)), (7, 6, _zz(size)), (9, 6, _zz(offset))])
        return _struct([(2, 6, _zz(offset)), (3, 12, meta)])

    def group(chunks: list[bytes], rows: int) -> bytes:
        return _struct([(1, 9, _list_header(len(chunks), 12) + b"".join(chunks)), (3, 6, _zz(rows))])

    def footer(schema: bytes, rows: int, groups: list[bytes]) -> bytes:
        return _struct(
            [(2, 9, schema), (3, 6, _zz(rows)), (4, 9, _list_header(len(groups), 12) + b"".join(groups))]
        )

    cases = {
        "ok": (footer(schema1, 5, [group([chunk(4, 32)], 5)]), None),
        "two-chunks-one-column": (
            footer(schema1, 5, [group([chunk(4, 16), chunk(20, 16)], 5)]),
            "a row group has 2 column chunks for 1 columns",
        ),
        "rows-without-groups": (footer(schema1, 5, []), "the footer says 5 rows but holds no row groups"),
        "rows-disagree": (
            footer(schema1, 9, [group([chunk(4, 32)], 5)]),
            "row groups hold 5 rows, the footer says 9",
        ),
        "chunk-past-data": (
            footer(schema1, 5, [group([chunk(4, 33)], 5)]),
            "lies outside the data region (4..36)",
        ),
        "chunk-in-head-magic": (
            footer(schema1, 5, [group([chunk(0, 8)], 5)]),
            "no page offset inside the file",
        ),
        "tree-too-short": (
            footer(_list_header(2, 12) + _schema_element("root", 2) + leaf, 0, []),
            "schema tree is missing elements",
        ),
        "tree-too-long": (
            footer(_list_header(3, 12) + _schema_element("root", 1) + leaf + leaf, 0, []),
            "schema has more elements than its tree describes",
        ),
        "external-chunk": (
            footer(schema1, 5, [group([_struct([(1, 8, _binary(b"other.parquet")), (2, 6, _zz(4))])], 5)]),
            "lives in another file",
        ),
    }
    for name, (meta, expected) in cases.items():
        path = tmp_path / f"{name}.parquet"
        _write_footer(path, meta)  # 32 data bytes: the data region is 4..36
        got = agent.payload_problem(str(path), "snapshot")
        assert (got is None) if expected is None else (expected in (got or "")), (name, got)


def test_every_single_byte_corruption_of_the_footer_gives_an_answer(tmp_path: Path) -> None:
    """Flip each footer byte: payload_problem answers None or a text, never raises."""
    good = tmp_path / "good.parquet"
    pq.write_table(_core_table(3), good)
    data = bytearray(good.read_bytes())
    flen = _footer_len(good)
    bad = tmp_path / "bad.parquet"
    refused = 0
    for i in range(len(data) - 8 - flen, len(data) - 8, 3):
        for value in (0x00, 0xFF):
            copy = bytearray(data)
            copy[i] = value
            bad.write_bytes(bytes(copy))
            got = agent.payload_problem(str(bad), "records")
            assert got is None or isinstance(got, str)
            refused += got is not None
    assert refused > 0


def test_meta_must_be_utf8_text(tmp_path: Path) -> None:
    meta = tmp_path / "meta.md"
    cases = {
        "name: demo\nnotes: ünïcödé ✓\n".encode(): None,
        b"": None,
        "café".encode("latin-1"): "is not UTF-8 text (invalid byte near offset 3)",
        b"\x00" * 100: "holds a NUL byte at offset 0 (binary data, not text)",
        b"ok\n" * 500_000 + b"\xff": "is not UTF-8 text (invalid byte near offset 1500000)",
        b"ok" + "é".encode()[:1]: "is not UTF-8 text (invalid byte near offset 2)",  # cut mid-character
    }
    for blob, expected in cases.items():
        meta.write_bytes(blob)
        assert agent.payload_problem(str(meta), "meta") == expected


def test_payload_checks_run_without_pyarrow_on_python_3_6_through_the_bootstrap(
    tmp_path: Path, agent_python_36: str
) -> None:
    """The agent's apply validates uploads and snapshots the replaced primary on a bare old python3."""
    import hashlib
    import json

    from usrbatch.agent import client

    python = agent_python_36
    ds = tmp_path / "ns" / "demo"
    ds.mkdir(parents=True)
    pq.write_table(_core_table(2), ds / "records.parquet")
    old = (ds / "records.parquet").read_bytes()
    pq.write_table(_core_table(5), ds / ".usrbatch-tmp-r")
    (ds / ".usrbatch-tmp-j").write_bytes(b"\x00" * 100)

    def apply(renames: list, payload: dict, snapshot: list | None = None) -> dict:
        req = {"op": "apply", "base": str(tmp_path), "renames": renames, "removals": [], "payload": payload}
        if snapshot:
            req["snapshot"] = snapshot
        out = subprocess.run(
            [python, "-c", client.BOOTSTRAP],
            input=client.encode(req),
            capture_output=True,
            timeout=30,
        )
        return json.loads(out.stdout.decode().splitlines()[-1])

    refused = apply(
        [
            ["ns/demo/.usrbatch-tmp-j", "ns/demo/_derived/x/part-1.parquet"],
            ["ns/demo/.usrbatch-tmp-r", "ns/demo/records.parquet"],
        ],
        {"ns/demo/.usrbatch-tmp-j": "overlay", "ns/demo/.usrbatch-tmp-r": "records"},
    )
    assert (
        refused["ok"] is False
        and refused["kind"] == "payload"
        and refused["path"] == "ns/demo/.usrbatch-tmp-j"
    )
    assert refused["error"].startswith(
        "post-push-payload: the uploaded copy of ns/demo/_derived/x/part-1.parquet"
    )
    assert "missing head magic PAR1" in refused["error"] and refused["hint"]
    assert sorted(p.name for p in ds.iterdir()) == [
        "records.parquet"
    ]  # both uploads removed, nothing renamed
    pq.write_table(_core_table(5), ds / ".usrbatch-tmp-r")
    new = (ds / ".usrbatch-tmp-r").read_bytes()
    snap = "ns/demo/_snapshots/records-20261126T000000123456.parquet"
    done = apply(
        [["ns/demo/.usrbatch-tmp-r", "ns/demo/records.parquet"]],
        {"ns/demo/.usrbatch-tmp-r": "records"},
        ["ns/demo/records.parquet", snap],
    )
    assert done["ok"] is True and done["result"]["snapshot"] == snap, done
    assert (tmp_path / snap).read_bytes() == old and (ds / "records.parquet").read_bytes() == new
    assert not list((ds / "_snapshots").glob(".usrbatch-tmp-*"))
    again = apply([], {}, ["ns/demo/records.parquet", snap])  # never overwrites a snapshot
    assert again["ok"] is False and "snapshot target already exists" in again["error"]
    assert hashlib.sha256((tmp_path / snap).read_bytes()).hexdigest() == hashlib.sha256(old).hexdigest()
