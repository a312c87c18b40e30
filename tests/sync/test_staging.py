"""Staging dirs, the staged walk and the promotion journal (roll-forward is idempotent)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from usrbatch.errors import TransferError, VerificationError
from usrbatch.sync import staging as stg


def test_staging_dir_name_and_discovery(tmp_path):
    s = stg.create_staging(tmp_path, "densegen/demo")
    assert s.parent == tmp_path and s.name.startswith(".usr-pull-densegen__demo-")
    other = stg.create_staging(tmp_path, "densegen/demo-x")
    assert stg.staging_dirs(tmp_path, "densegen/demo") == [s]
    assert stg.staging_dirs(tmp_path, "densegen/demo-x") == [other]
    assert stg.staging_dirs(tmp_path / "absent", "x") == []


def test_walk_staged_hashes_and_rejects_links_and_specials(tmp_path):
    s = stg.create_staging(tmp_path, "d")
    (s / "_derived" / "a").mkdir(parents=True)
    (s / "_derived" / "a" / "p.parquet").write_bytes(b"abc")
    files = stg.walk_staged(s)
    assert (
        files["_derived/a/p.parquet"].sha256
        == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    os.symlink("/etc/hostname", s / "records.parquet")
    with pytest.raises(
        VerificationError, match=r"^Staged pull payload contains symlink entry: records.parquet$"
    ):
        stg.walk_staged(s)
    os.unlink(s / "records.parquet")
    os.mkfifo(s / "_derived" / "fifo")
    with pytest.raises(VerificationError, match=r"unsupported entry type: _derived/fifo$"):
        stg.walk_staged(s)


def test_journal_roll_forward_is_idempotent(tmp_path):
    dest = tmp_path / "ds"
    (dest / "_derived" / "old").mkdir(parents=True)
    (dest / "_derived" / "old" / "gone.parquet").write_bytes(b"old")
    (dest / ".usr.lock").write_bytes(b"")
    s = stg.create_staging(tmp_path, "ds")
    (s / "_derived" / "new").mkdir(parents=True)
    (s / "_derived" / "new" / "a.parquet").write_bytes(b"A")
    (s / "records.parquet").write_bytes(b"R")
    (s / ".events.log").write_bytes(b"{}\n")
    stg.write_journal(
        s,
        dest,
        ["records.parquet", ".events.log", "_derived/new/a.parquet"],
        ["_derived/old/gone.parquet", ".usr.lock"],
    )
    journal = stg.journal_for(s)
    assert journal.parent == tmp_path and not journal.is_relative_to(s)  # beside staging, not in it
    body = json.loads(journal.read_text())
    assert [e[0] for e in body["install"]][-1] == ".events.log"  # the event log is promoted last
    assert [e[0] for e in body["delete"]] == ["_derived/old/gone.parquet"]  # runtime files never
    # a crash after the first rename: that file is already in place, the rest is still staged
    (dest / "_derived" / "new").mkdir(parents=True)
    os.replace(s / "_derived" / "new" / "a.parquet", dest / "_derived" / "new" / "a.parquet")
    assert stg.pending_journals(tmp_path, "ds", dest) == [s]
    assert stg.roll_forward(s, dest) == (2, 1)
    assert (dest / "records.parquet").read_bytes() == b"R"
    assert (dest / "_derived" / "new" / "a.parquet").read_bytes() == b"A"
    assert not (dest / "_derived" / "old").exists()
    assert (dest / ".usr.lock").exists()
    assert not s.exists() and not journal.exists()
    assert stg.pending_journals(tmp_path, "ds", dest) == []


def test_roll_forward_refuses_when_both_sides_are_gone(tmp_path):
    dest = tmp_path / "ds"
    dest.mkdir()
    s = stg.create_staging(tmp_path, "ds")
    (s / "records.parquet").write_bytes(b"R")
    stg.write_journal(s, dest, ["records.parquet"], [])
    (s / "records.parquet").unlink()
    with pytest.raises(TransferError, match="cannot be completed"):
        stg.roll_forward(s, dest)


def test_walk_staged_trusts_a_downloaded_hash_only_while_the_stat_matches(tmp_path: Path) -> None:
    import hashlib

    from usrbatch.transport.base import FileEntry

    staging = tmp_path / "stage"
    staging.mkdir()
    good, changed = staging / "good.bin", staging / "changed.bin"
    good.write_bytes(b"good")
    changed.write_bytes(b"xxxx")
    for path in (good, changed):
        os.utime(path, ns=(5_000, 5_000))
    claimed = "0" * 64  # what the transport verified; a re-hash would give something else
    verified = {
        "good.bin": FileEntry("good.bin", 4, 5_000, claimed),
        "changed.bin": FileEntry("changed.bin", 4, 4_000, claimed),  # mtime differs now
    }
    inodes: dict[str, int] = {}
    files = stg.walk_staged(staging, verified, inodes)
    assert files["good.bin"].sha256 == claimed  # not re-read
    assert files["changed.bin"].sha256 == hashlib.sha256(b"xxxx").hexdigest()  # re-hashed
    assert inodes == {"good.bin": good.stat().st_ino, "changed.bin": changed.stat().st_ino}
    assert stg.walk_staged(staging)["good.bin"].sha256 == hashlib.sha256(b"good").hexdigest()


def _journal(staging: Path, dest: Path, **body) -> None:
    base = {"version": stg.JOURNAL_VERSION, "dataset_dir": str(dest.absolute()), "install": [], "delete": []}
    base.setdefault("watch", [])
    stg.journal_for(staging).write_text(json.dumps({**base, **body}))


@pytest.mark.parametrize(
    "rel", ["../victim.txt", "/abs/victim.txt", "a/../../victim.txt", "./victim.txt", "a//b", ".usr.lock"]
)
def test_roll_forward_refuses_unsafe_journal_paths_before_touching_anything(tmp_path, rel):
    dest = tmp_path / "ds"
    dest.mkdir()
    (dest / "records.parquet").write_bytes(b"R")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    s = stg.create_staging(tmp_path, "ds")
    _journal(s, dest, delete=[["records.parquet", None], [rel, None]])
    with pytest.raises(TransferError, match="Promotion journal .* (unsafe|reserved)") as caught:
        stg.roll_forward(s, dest)
    assert "Remove" in caught.value.hint
    assert victim.read_text() == "precious"
    assert (dest / "records.parquet").read_bytes() == b"R"  # nothing before the bad entry either


def test_roll_forward_never_hops_a_symlink_out_of_the_dataset(tmp_path):
    dest = tmp_path / "ds"
    dest.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.parquet").write_bytes(b"precious")
    os.symlink(outside, dest / "_derived")  # planted by hand or by an older tool
    s = stg.create_staging(tmp_path, "ds")
    (s / "_derived").mkdir()
    (s / "_derived" / "y.parquet").write_bytes(b"Y")
    _journal(s, dest, delete=[["_derived/x.parquet", None]])
    with pytest.raises(TransferError, match=r"_derived .*is a symlink"):
        stg.roll_forward(s, dest)
    assert (outside / "x.parquet").read_bytes() == b"precious"
    with pytest.raises(TransferError, match="is a symlink"):
        stg.write_journal(s, dest, ["_derived/y.parquet"], [])
    assert not (outside / "y.parquet").exists()


def test_roll_forward_refuses_a_journal_for_another_dataset_dir(tmp_path):
    dest, other = tmp_path / "ds", tmp_path / "other"
    dest.mkdir()
    other.mkdir()
    (other / "keep").write_bytes(b"K")
    s = stg.create_staging(tmp_path, "ds")
    _journal(s, other, delete=[["keep", None]])
    with pytest.raises(TransferError, match="another directory"):
        stg.roll_forward(s, dest)
    assert (other / "keep").read_bytes() == b"K"


def test_roll_forward_refuses_when_a_target_changed_after_the_journal(tmp_path):
    dest = tmp_path / "ds"
    dest.mkdir()
    (dest / "records.parquet").write_bytes(b"old")
    (dest / ".events.log").write_bytes(b'{"a":1}\n')
    s = stg.create_staging(tmp_path, "ds")
    (s / "records.parquet").write_bytes(b"remote")
    (s / "_derived").mkdir()
    (s / "_derived" / "p.parquet").write_bytes(b"P")
    stg.write_journal(s, dest, ["records.parquet", "_derived/p.parquet"], [], dataset_id="ds")
    (dest / "_derived").mkdir()  # a crash after the first rename
    os.replace(s / "_derived" / "p.parquet", dest / "_derived" / "p.parquet")
    # a local write after the interruption: the event log is not promoted, but it changed
    with open(dest / ".events.log", "ab") as fh:
        fh.write(b'{"b":2}\n')
    with pytest.raises(stg.PromotionConflict, match=r"'ds' cannot be completed.*\(\.events\.log\)"):
        stg.roll_forward(s, dest)
    assert (dest / "records.parquet").read_bytes() == b"old"
    assert stg.journal_for(s).exists() and s.exists()
    # an mtime-only touch (same bytes) is not a change
    (dest / ".events.log").write_bytes(b'{"a":1}\n')
    os.utime(dest / ".events.log", ns=(1, 1))
    # an already-promoted file rewritten locally is a change too
    (dest / "_derived" / "p.parquet").write_bytes(b"local")
    with pytest.raises(stg.PromotionConflict, match=r"_derived/p\.parquet"):
        stg.roll_forward(s, dest)
    (dest / "_derived" / "p.parquet").write_bytes(b"P")
    assert stg.roll_forward(s, dest) == (1, 0)
    assert (dest / "records.parquet").read_bytes() == b"remote"
    assert not stg.journal_for(s).exists() and not s.exists()
