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
    body = json.loads((s / stg.JOURNAL).read_text())
    assert body["install"][-1] == ".events.log"  # the event log is promoted last
    assert ".usr.lock" not in body["delete"]  # runtime files are never deleted
    # a crash after the first rename: that file is already in place, the rest is still staged
    (dest / "_derived" / "new").mkdir(parents=True)
    os.replace(s / "_derived" / "new" / "a.parquet", dest / "_derived" / "new" / "a.parquet")
    assert stg.pending_journals(tmp_path, "ds", dest) == [s]
    assert stg.roll_forward(s) == (2, 1)
    assert (dest / "records.parquet").read_bytes() == b"R"
    assert (dest / "_derived" / "new" / "a.parquet").read_bytes() == b"A"
    assert not (dest / "_derived" / "old").exists()
    assert (dest / ".usr.lock").exists()
    assert not s.exists()


def test_roll_forward_refuses_when_both_sides_are_gone(tmp_path):
    dest = tmp_path / "ds"
    dest.mkdir()
    s = stg.create_staging(tmp_path, "ds")
    stg.write_journal(s, dest, ["records.parquet"], [])
    with pytest.raises(TransferError, match="cannot be completed"):
        stg.roll_forward(s)


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
