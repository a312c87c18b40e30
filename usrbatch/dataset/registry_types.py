"""Registry column types: the type text of registry.yaml (`float64`, `list<T>`,
`fixed_size_list<T>[N]`, `struct<a:T,b:U>`, `timestamp[unit, tz]`) to and from Arrow types, in the
one spelling the public tool's validate compares character for character. Pure: pyarrow only.
"""

from __future__ import annotations

import re
import zoneinfo

import pyarrow as pa

from usrbatch.errors import SchemaError

_SCALARS: dict[str, pa.DataType] = {
    "string": pa.string(),
    "int8": pa.int8(),
    "int16": pa.int16(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "uint8": pa.uint8(),
    "uint16": pa.uint16(),
    "uint32": pa.uint32(),
    "uint64": pa.uint64(),
    "float16": pa.float16(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "bool": pa.bool_(),
}
_TIMESTAMP = re.compile(r"^timestamp\[\s*(s|ms|us|ns)\s*(?:,\s*([^\]]+?)\s*)?\]$")
_FIXED_LIST = re.compile(r"^fixed_size_list<(.*)>\[\s*(\d+)\s*\]$", re.S)


def split_top_level(text: str) -> list[str]:
    """Split on commas at bracket depth 0 (`<>` and `[]`), dropping empty pieces."""
    parts: list[str] = []
    depth = 0
    start = 0
    for index, ch in enumerate(text):
        if ch in "<[":
            depth += 1
        elif ch in ">]":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _unsupported(text: str) -> SchemaError:
    return SchemaError(
        f"Unsupported registry type '{text}'.",
        hint="Use string, int8..int64, uint8..uint64, float16/32/64, bool, list<T>, "
        "fixed_size_list<T>[N], struct<name:T,...>, timestamp[unit] or timestamp[unit, tz].",
    )


def parse_type(text: str) -> pa.DataType:
    """Parse a registry type spec to a pyarrow type; SchemaError `Unsupported registry type` otherwise."""
    spec = (text or "").strip()
    if spec in _SCALARS:
        return _SCALARS[spec]
    if m := _TIMESTAMP.match(spec):
        try:
            return pa.timestamp(m.group(1), tz=m.group(2))
        except (ValueError, pa.ArrowInvalid) as exc:
            raise _unsupported(text) from exc
    if m := _FIXED_LIST.match(spec):
        size = int(m.group(2))
        if size <= 0:
            raise _unsupported(text)
        return pa.list_(parse_type(m.group(1)), size)
    if spec.startswith("list<") and spec.endswith(">"):
        return pa.list_(parse_type(spec[5:-1]))
    if spec.startswith("struct<") and spec.endswith(">"):
        fields = []
        for piece in split_top_level(spec[7:-1]):
            name, sep, inner = piece.partition(":")
            if not sep or not name.strip() or not inner.strip():
                raise _unsupported(text)
            fields.append(pa.field(name.strip(), parse_type(inner)))
        if not fields:
            raise _unsupported(text)
        return pa.struct(fields)
    raise _unsupported(text)


_OFFSET = re.compile(r"^[+-](?:[01]\d|2[0-3]):[0-5]\d$")


def check_timezones(dtype: pa.DataType, text: str) -> None:
    """Every time zone in `dtype` (nested ones too) is UTC, an offset `+HH:MM`, or an IANA name
    the time-zone database knows (the `tzdata` package ships one); SchemaError naming it otherwise.
    Checked when a namespace is registered: `timestamp[us, tz=UTC]` would register, then fail
    on the first read of a value."""
    if pa.types.is_timestamp(dtype) and dtype.tz and dtype.tz != "UTC" and not _OFFSET.match(dtype.tz):
        try:
            zoneinfo.ZoneInfo(dtype.tz)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise SchemaError(
                f"Unsupported registry type '{text}': time zone '{dtype.tz}' is not known.",
                hint="Use UTC, an IANA name (Europe/Berlin, America/New_York) or an offset (+01:00), "
                "e.g. timestamp[us, UTC].",
            ) from exc
    if pa.types.is_list(dtype) or pa.types.is_fixed_size_list(dtype) or pa.types.is_large_list(dtype):
        check_timezones(dtype.value_type, text)
    elif pa.types.is_struct(dtype):
        for fld in dtype:
            check_timezones(fld.type, text)


def render_type(dtype: pa.DataType) -> str:
    """Render a pyarrow type in registry syntax (`timestamp[us, UTC]`; large_* map to plain)."""
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return "string"
    if pa.types.is_boolean(dtype):
        return "bool"
    for name, scalar in _SCALARS.items():
        if dtype == scalar:
            return name
    if pa.types.is_timestamp(dtype):
        return f"timestamp[{dtype.unit}, {dtype.tz}]" if dtype.tz else f"timestamp[{dtype.unit}]"
    if pa.types.is_fixed_size_list(dtype):
        return f"fixed_size_list<{render_type(dtype.value_type)}>[{dtype.list_size}]"
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
        return f"list<{render_type(dtype.value_type)}>"
    if pa.types.is_struct(dtype):
        inner = ",".join(f"{f.name}:{render_type(f.type)}" for f in dtype)
        return f"struct<{inner}>"
    raise SchemaError(f"Unsupported Arrow type '{dtype}'.")


def canonical_type(text: str) -> str:
    """The canonical rendering of a registered type text (for comparisons that ignore spacing)."""
    return render_type(parse_type(text))
