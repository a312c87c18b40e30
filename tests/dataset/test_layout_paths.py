"""The string-based path checks every inventory runs per file agree with PurePosixPath's reading
of the same path (they replaced it for speed: B3/B4 in docs/benchmarks.md)."""

import itertools
from pathlib import PurePosixPath

import pytest

from usrbatch.dataset import layout
from usrbatch.errors import TransferError
from usrbatch.transport.base import validate_relpath

ATOMS = ["a", ".", "..", "", ".usr.lock", ".usrbatch-tmp-x", ".usr-pull-x", "_snapshots", "_derived",
         "records.parquet", ".usr.lease.1", ".usr-promotion.json"]  # fmt: skip
SPELLINGS = ["/".join(c) for k in (1, 2, 3) for c in itertools.product(ATOMS, repeat=k)]


def _reference_parts(rel: str) -> tuple[str, ...]:
    return PurePosixPath(rel).parts


def test_parts_match_purepath():
    for rel in SPELLINGS:
        if rel and not rel.startswith("/"):
            assert tuple(layout._parts(rel)) == _reference_parts(rel), rel


def test_checks_match_purepath_reading():
    """is_runtime / is_reserved / classify answer as they did with PurePosixPath parts."""
    for rel in SPELLINGS:
        if not rel or rel.startswith("/") or not _reference_parts(rel):
            continue
        parts = _reference_parts(rel)
        runtime = parts[0] in layout.RUNTIME_NAMES or parts[0].startswith(layout.LEASE_PREFIX)
        runtime = runtime or any(p.startswith(layout.TEMP_PREFIX) for p in parts)
        assert layout.is_runtime(rel) is runtime, rel
        reserved = runtime or any(p.startswith(layout.RESERVED_PREFIXES) for p in parts)
        assert layout.is_reserved(rel) is reserved, rel
        if not runtime and parts[0] == layout.DERIVED_DIR and len(parts) > 1:
            assert layout.classify(rel) is layout.Category.DERIVED, rel


def test_validate_relpath_returns_the_normal_form_or_refuses():
    for raw in SPELLINGS + ["./a/b", "a/", "a\\b", "a/\nb", "/a"]:
        text = raw[2:] if raw.startswith("./") else raw
        unsafe = not text or text.startswith("/") or "\\" in text or "\n" in text
        unsafe = unsafe or any(p in ("", ".", "..") for p in text.split("/"))
        if unsafe:
            with pytest.raises(TransferError, match="unsafe relative path"):
                validate_relpath(raw)
        else:
            assert validate_relpath(raw) == str(PurePosixPath(text)), raw
