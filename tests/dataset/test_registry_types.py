"""Registry type texts to and from Arrow types (dataset/registry_types.py)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from usrbatch.dataset.registry_types import canonical_type, parse_type, render_type
from usrbatch.errors import SchemaError


@pytest.mark.parametrize(
    ("spec", "arrow"),
    [
        ("string", pa.string()),
        ("int8", pa.int8()),
        ("uint64", pa.uint64()),
        ("float16", pa.float16()),
        ("bool", pa.bool_()),
        ("list<float64>", pa.list_(pa.float64())),
        ("fixed_size_list<int32>[4]", pa.list_(pa.int32(), 4)),
        ("struct<a:int32,b:list<string>>", pa.struct([("a", pa.int32()), ("b", pa.list_(pa.string()))])),
        ("timestamp[us, UTC]", pa.timestamp("us", tz="UTC")),
        ("timestamp[ms]", pa.timestamp("ms")),
    ],
)
def test_type_specs_round_trip(spec: str, arrow: pa.DataType) -> None:
    assert parse_type(spec) == arrow
    assert render_type(arrow) == spec


def test_large_types_render_as_plain() -> None:
    assert render_type(pa.large_string()) == "string"
    assert render_type(pa.large_list(pa.large_string())) == "list<string>"
    assert canonical_type("list< float64 >") == "list<float64>"


@pytest.mark.parametrize(
    "bad", ["float128", "list<nope>", "fixed_size_list<int8>[0]", "struct<>", "map<a,b>"]
)
def test_unsupported_types_are_named(bad: str) -> None:
    with pytest.raises(SchemaError, match="Unsupported registry type"):
        parse_type(bad)
