"""Inventories of both sides and their per-section view."""

from __future__ import annotations

import os

import pytest
from builders import make_dataset

from usrbatch.errors import TransferError
from usrbatch.sync.inventory import local_inventory, reject_reserved, reject_unsafe, sections
from usrbatch.transport.base import FileEntry, Inventory


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


@pytest.mark.parametrize(
    ("files", "temps", "named"),
    [
        (["records.parquet", "../escape"], [], "'../escape'"),
        (["records.parquet", "/abs"], [], "'/abs'"),
        (["_derived/./x"], [], "'_derived/./x'"),
        ([".usr.lock"], [], "'.usr.lock'"),  # the agent never lists runtime names: refuse if one does
        ([".usr-promotion.json"], [], "'.usr-promotion.json'"),
        (["records.parquet"], ["records.parquet"], "'records.parquet'"),  # not one of our temps
        (["records.parquet"], ["../.usrbatch-tmp-x"], "'../.usrbatch-tmp-x'"),
    ],
)
def test_reject_reserved_refuses_unsafe_or_control_names_from_any_transport(files, temps, named):
    inv = Inventory(
        exists=True,
        files={rel: FileEntry(rel, 1, 1, "0" * 64) for rel in files},
        temps={rel: 1 for rel in temps},
    )
    with pytest.raises(TransferError, match="reserved for usrbatch's own control files") as info:
        reject_reserved(inv, side="Remote", where="local:/lab/ns/demo")
    assert named in info.value.message and "local:/lab/ns/demo" in info.value.message


def test_reject_reserved_accepts_a_real_dataset(tmp_path):
    d = make_dataset(tmp_path, "ns/demo")
    (d / ".usrbatch-tmp-abc-records.parquet").write_bytes(b"partial upload")
    reject_reserved(local_inventory(d), side="Local", where=str(d))
