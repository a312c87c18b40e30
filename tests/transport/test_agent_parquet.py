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

from usrbatch.dataset.records import import_records, init_dataset
from usrbatch.transport import agent


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
        "import agent; print(json.dumps(agent.inventory(sys.argv[3], True, True, sys.argv[4])['primary_shape']))"
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
