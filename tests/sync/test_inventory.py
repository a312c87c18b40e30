"""Inventories of both sides and their per-section view."""

from __future__ import annotations

import os

import pytest
from builders import make_dataset

from usrbatch.errors import TransferError
from usrbatch.sync.inventory import local_inventory, reject_unsafe, sections


def test_local_inventory_sections(tmp_path):
    d = make_dataset(tmp_path, "ns/demo")
    (d / ".usr.lock").write_bytes(b"")
    inv = local_inventory(d)
    assert ".usr.lock" not in inv.files
    sec = sections(inv)
    assert sec.primary is not None and sec.meta is not None and sec.events_lines == 2
    assert sec.snapshot_names == ["records-20260101T000000123456.parquet"]
    assert len(sec.derived) == 1 and next(iter(sec.derived)).startswith("densegen/part-")
    assert sorted(sec.auxiliary) == ["_artifacts/batch/checkpoint.json", "_registry/registry.abc.yaml"]
    assert local_inventory(tmp_path / "absent").exists is False


def test_reject_unsafe_names_the_path(tmp_path):
    d = make_dataset(tmp_path, "ns/demo")
    os.symlink("records.parquet", d / "alias.parquet")
    os.mkfifo(d / "_artifacts" / "pipe")
    with pytest.raises(TransferError) as info:
        reject_unsafe(local_inventory(d), side="Local", where=str(d))
    assert "_artifacts/pipe" in str(info.value) and "(and 1 more)" in str(info.value)
