"""Control files are never payload: a remote that plants a file named like one of the pull's own
control files (its promotion journal, staging dirs, locks, temps) gets a refusal naming the file,
and a journal is obeyed only for safe paths inside the dataset dir.

Runs over the local transport here and over the real sshd in tests/integration/test_sync_engine.py
(same functions, `sides` with an SshTransport)."""

from __future__ import annotations

import json

import pytest
from builders import make_dataset, tree, write_records

from usrbatch.errors import TransferError, UsrError
from usrbatch.sync import engine

DS = "densegen/demo"


class CutBeforeLargest:
    """A real transport whose connection drops before the largest file arrives (the others are
    downloaded and kept for a resumed pull, as after Ctrl-C, qdel/scancel or a walltime kill)."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def download(self, items, *, progress=None):
        big = max(items, key=lambda i: i.size)
        self.inner.download([i for i in items if i is not big], progress=progress)
        raise TransferError("connection reset by peer")


def _plant_journal(remote_ds, local_ds, victim_rel: str) -> None:
    """What a lab-mate with write access to the remote dataset dir can plant: a file named like the
    pull's journal, asking to delete (and install over) a path outside the local dataset."""
    body = {
        "version": 1,
        "dataset_dir": str(local_ds),
        "install": [victim_rel],
        "delete": [victim_rel, "../../../outside-dir/also.txt"],
    }
    (remote_ds / ".usr-promotion.json").write_text(json.dumps(body))


def test_planted_journal_never_deletes_outside_the_dataset(sides):
    make_dataset(sides.remote_root, DS)
    engine.pull(sides.local_root, DS, sides.transport)
    local_ds, remote_ds = sides.local_root / DS, sides.remote_root / DS
    victim = sides.local_root.parent / "victim.txt"
    victim.write_text("precious\n")
    (sides.local_root.parent / "outside-dir").mkdir()
    (sides.local_root.parent / "outside-dir" / "also.txt").write_text("also precious\n")
    _plant_journal(remote_ds, local_ds, "../../../victim.txt")
    write_records(remote_ds / "records.parquet", 3000, tag="big")  # the download is cut before it
    before = tree(local_ds)

    with pytest.raises(TransferError):
        engine.pull(sides.local_root, DS, CutBeforeLargest(sides.transport))
    # the next pull must not follow anything the remote named
    with pytest.raises(UsrError) as caught:
        engine.pull(sides.local_root, DS, sides.transport)

    assert victim.exists(), "a remote-planted journal deleted a file outside the dataset"
    assert victim.read_text() == "precious\n"
    assert (sides.local_root.parent / "outside-dir" / "also.txt").read_text() == "also precious\n"
    assert tree(local_ds) == before
    assert isinstance(caught.value, TransferError)
    assert "'.usr-promotion.json'" in caught.value.message
    assert "reserved for usrbatch's own control files" in caught.value.message
    assert "rename or remove it" in (caught.value.hint or "")


@pytest.mark.parametrize(
    "name",
    [
        ".usr-promotion.json",
        ".usr-promotion.json.tmp",
        "_derived/densegen/.usr-promotion.json",
        ".usr-pull-densegen__demo-abc123.promotion.json",
        "_artifacts/.usr-pull-densegen__demo-x/records.parquet",
    ],
)
def test_reserved_remote_name_is_refused_before_any_write(sides, name):
    make_dataset(sides.remote_root, DS)
    engine.pull(sides.local_root, DS, sides.transport)
    planted = sides.remote_root / DS / name
    planted.parent.mkdir(parents=True, exist_ok=True)
    planted.write_text("{}")
    before = tree(sides.local_root / DS)
    with pytest.raises(TransferError, match="reserved for usrbatch's own control files") as caught:
        engine.pull(sides.local_root, DS, sides.transport)
    assert repr(name) in caught.value.message
    assert tree(sides.local_root / DS) == before
    assert not list(sides.local_root.glob(".usr-pull-*"))
    # diff reports the same refusal (nothing is written by a diff either way)
    with pytest.raises(TransferError, match="reserved"):
        engine.plan_diff(sides.local_root, DS, sides.transport)


def test_reserved_local_name_is_never_pushed(sides):
    make_dataset(sides.local_root, DS)
    (sides.local_root / DS / ".usr-promotion.json").write_text("{}")
    with pytest.raises(TransferError, match=r"Local dataset file '.usr-promotion.json'.*reserved"):
        engine.push(sides.local_root, DS, sides.transport)
    assert not (sides.remote_root / DS).exists()


def test_remote_runtime_names_are_not_pulled(sides):
    """Lock/lease/temp names are runtime files: never inventoried, so never pulled or refused."""
    make_dataset(sides.remote_root, DS)
    remote_ds = sides.remote_root / DS
    for name in (".usr.lock", ".events.lock", ".usr.lease.dataset.x", ".usrbatch-tmp-records.parquet"):
        (remote_ds / name).write_text("planted")
    engine.pull(sides.local_root, DS, sides.transport)
    local_ds = sides.local_root / DS
    assert not (local_ds / ".usr.lease.dataset.x").exists()
    assert not (local_ds / ".usrbatch-tmp-records.parquet").exists()
    for name in (".usr.lock", ".events.lock"):  # our own (empty) lock files, not the planted bytes
        assert not (local_ds / name).exists() or (local_ds / name).read_text() != "planted"
