"""Input readers (usrbatch/dataset/inputs.py): genome-sized fields, encodings, 1-based lines, fuzz."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from usrbatch.dataset import schema as S
from usrbatch.dataset.inputs import first_invalid_utf8, read_table
from usrbatch.dataset.record_rows import prepare_records
from usrbatch.dataset.records import import_records
from usrbatch.dataset.ref import DatasetRef
from usrbatch.errors import SchemaError, UsrError

GENOME = "ACGT" * 1_250_000  # 5 MB in one field: over pyarrow's 1 MiB parse block


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_genome_sized_field_imports(dataset: DatasetRef, tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"genome.{fmt}"
    if fmt == "csv":
        path.write_text(f"sequence,source\n{GENOME},chr1\nACGTTT,short\n")
    else:
        path.write_text(json.dumps({"sequence": GENOME}) + "\n" + json.dumps({"sequence": "ACGTTT"}) + "\n")
    result = import_records(dataset, path, fmt=fmt)
    assert result.rows_written == 2
    lengths = pq.read_table(dataset.records, columns=["length"])["length"].to_pylist()
    assert len(GENOME) in lengths


@pytest.mark.parametrize(
    ("fmt", "body"),
    [
        ("csv", b"sequence,name\nACGT,caf\xe9\n"),
        ("jsonl", b'{"sequence":"ACGT"}\n{"sequence":"ACGT","n":"caf\xe9"}\n'),
        ("fasta", b">ok\nACGT\n>caf\xe9\nACGT\n"),
    ],
)
def test_non_utf8_input_names_the_byte_and_suggests_iconv(
    dataset: DatasetRef, tmp_path: Path, tree, fmt: str, body: bytes
) -> None:
    path = tmp_path / f"latin.{fmt}"
    path.write_bytes(body)
    offset = body.index(b"\xe9")
    line = body[:offset].count(b"\n") + 1
    before = tree(dataset.root)
    with pytest.raises(SchemaError) as info:
        import_records(dataset, path, fmt=fmt)
    assert info.value.message == (
        f"{fmt.upper()} input {path} is not UTF-8 text: byte 0xE9 at byte offset {offset} (line {line}) "
        "is not valid UTF-8."
    )
    assert f"iconv -f latin1 -t utf-8 {path} > {tmp_path / f'latin.utf8.{fmt}'}" in (info.value.hint or "")
    assert "column" not in info.value.message
    assert tree(dataset.root) == before


def test_first_invalid_utf8_across_chunk_boundaries(tmp_path: Path) -> None:
    path = tmp_path / "x.txt"
    text = ("é" * 700_000 + "\n").encode()  # 2-byte characters straddle the 1 MiB read chunks
    path.write_bytes(text + b"ok\n" + text)
    assert first_invalid_utf8(path) is None
    path.write_bytes(text + b"ok\n\xff")
    assert first_invalid_utf8(path) == (len(text) + 3, 3, 0xFF)
    path.write_bytes(text[:-2])  # ends inside a character
    assert first_invalid_utf8(path) == (len(text) - 3, 1, 0xC3)


@pytest.mark.parametrize("fmt", ["fasta", "csv", "jsonl", "json"])
def test_a_utf8_byte_order_mark_is_accepted(tmp_path: Path, fmt: str) -> None:
    body = {
        "fasta": ">one\nACGT\n",
        "csv": "sequence\nACGT\n",
        "jsonl": '{"sequence": "ACGT"}\n',
        "json": '[{"sequence": "ACGT"}]',
    }[fmt]
    path = tmp_path / f"bom.{fmt}"
    path.write_bytes(b"\xef\xbb\xbf" + body.encode())
    table = read_table(path, fmt)
    assert table["sequence"].to_pylist() == ["ACGT"]


def test_jsonl_errors_name_the_1_based_file_line(tmp_path: Path) -> None:
    lines = [json.dumps({"sequence": "ACGT" * 10})] * 40_000  # several parse blocks
    lines[30_000] = '{"sequence": "ACGT"'
    path = tmp_path / "many.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(SchemaError, match=r"^Malformed JSONL .*many\.jsonl: line 30001: Expecting ','"):
        read_table(path)
    path.write_text('{"sequence": "ACGT"}\n\n{"other": 1}\n{"sequence": 5}\n')
    with pytest.raises(SchemaError, match=r"line 4: field 'sequence' is a number, but a string on line 1"):
        read_table(path)
    path.write_text('{"sequence": "ACGT"}\n[1, 2]\n')
    with pytest.raises(SchemaError, match=r"line 2 is a JSON array, not an object"):
        read_table(path)


def test_csv_column_count_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("sequence,x\n" + "ACGT,1\n" * 50_000 + "ACGT,1,2\n")
    with pytest.raises(SchemaError) as info:
        read_table(path)
    assert info.value.message == (
        f"Malformed CSV {path}: line 50002: Expected 2 columns, got 3: ACGT,1,2. "
        "Every row needs the header's column count: quote fields that contain commas."
    )


def test_a_malformed_json_array_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text('[{"sequence": "ACGT"},\n {"sequence": }]')
    with pytest.raises(SchemaError, match=r"^Malformed JSON .*a\.json: line 2, column 15: Expecting value"):
        read_table(path)


# ---------------------------------------------------------------------------------------------
# Fuzz: whatever the bytes, reading and preparing an input ends in a table or a UsrError.

_TEXTY = st.one_of(
    st.binary(max_size=300),
    st.text(alphabet=st.sampled_from('ACGTN>\n\r,;"{}[]:  \t\x1b\x00é\ufeff0'), max_size=300).map(str.encode),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fmt=st.sampled_from(["csv", "jsonl", "fasta", "json"]), header=st.booleans(), body=_TEXTY)
def test_fuzzed_inputs_give_a_table_or_a_usr_error(
    tmp_path: Path, fmt: str, header: bool, body: bytes
) -> None:
    path = tmp_path / f"fuzz.{fmt}"
    prefix = {"csv": b"sequence\n", "jsonl": b'{"sequence":"ACGT"}\n', "fasta": b">a\n", "json": b""}[fmt]
    path.write_bytes((prefix if header else b"") + body)
    try:
        table = read_table(path, fmt, string_columns=("sequence", "id", "bio_type", "alphabet", "source"))
    except UsrError:
        return
    assert isinstance(table, pa.Table)
    try:
        prepared = prepare_records(table, origin=str(path))
    except UsrError:
        return
    assert prepared.schema == S.CORE_SCHEMA and prepared.num_rows == table.num_rows


_ATTACH_BODY = st.text(alphabet=st.sampled_from('ACGT,;"{}[]:\n\t\x1b0123456789.eé-nul'), max_size=200).map(
    str.encode
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fmt=st.sampled_from(["csv", "jsonl"]), body=_ATTACH_BODY)
def test_fuzzed_attach_inputs_end_in_an_overlay_or_a_usr_error(
    dataset: DatasetRef, tmp_path: Path, fmt: str, body: bytes
) -> None:
    from usrbatch.dataset.overlays import attach

    path = tmp_path / f"fuzz.{fmt}"
    head = b"sequence,infer__label\n" if fmt == "csv" else b'{"sequence":"ACGTACGT","infer__label":"x"}\n'
    path.write_bytes(head + body)
    try:
        attach(dataset, path, "infer", key="sequence", allow_missing=True, allow_overwrite=True)
    except UsrError:
        return
    assert (dataset.dir / "_derived").is_dir()
