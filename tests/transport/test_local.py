"""LocalTransport: the Transport contract on a directory of this machine."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import pytest

from usrbatch.errors import TransferError, VerificationError
from usrbatch.transport.base import Transfer, Transport
from usrbatch.transport.local import LocalTransport


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def base(tmp_path) -> Path:
    b = tmp_path / "base"
    (b / "ns" / "ds" / "_derived" / "x").mkdir(parents=True)
    (b / "ns" / "ds" / "records.parquet").write_bytes(b"R" * 5000)
    (b / "ns" / "ds" / "_derived" / "x" / "part-1.parquet").write_bytes(b"P" * 10)
    (b / "ns" / "ds" / ".events.log").write_bytes(b'{"a":1}\n{"a":2}\n')
    (b / "ns" / "ds" / ".usr.lock").write_bytes(b"")
    return b


def test_is_a_transport(base):
    t = LocalTransport(base)
    assert isinstance(t, Transport)
    assert t.label == f"local:{base}"


def test_inventory_hashes_everything_but_runtime(base):
    inv = LocalTransport(base).inventory("ns/ds")
    assert inv.exists
    assert sorted(inv.files) == [".events.log", "_derived/x/part-1.parquet", "records.parquet"]
    assert inv.files["records.parquet"].sha256 == sha(b"R" * 5000)
    assert inv.events_lines == 2
    assert LocalTransport(base).inventory("ns/absent").exists is False


def test_inventory_reports_symlinks_and_rejects_unsafe_paths(base):
    os.symlink("/etc/hostname", base / "ns" / "ds" / "link")
    inv = LocalTransport(base).inventory("ns/ds")
    assert ("link", "symlink") in inv.rejected
    with pytest.raises(TransferError, match="unsafe relative path"):
        LocalTransport(base).inventory("../etc")


def test_download_verifies_and_preserves_mtime(base, tmp_path):
    t = LocalTransport(base)
    src = base / "ns" / "ds" / "records.parquet"
    os.utime(src, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    seen: list[int] = []
    dst = tmp_path / "out" / "records.parquet"
    t.download(
        [Transfer("ns/ds/records.parquet", dst, 5000, sha(b"R" * 5000))], progress=lambda p, n: seen.append(n)
    )
    assert dst.read_bytes() == b"R" * 5000
    assert sum(seen) == 5000
    assert dst.stat().st_mtime_ns == 1_700_000_000_000_000_000


def test_download_resumes_a_partial_file(base, tmp_path):
    t = LocalTransport(base)
    dst = tmp_path / "records.parquet"
    dst.write_bytes(b"R" * 3000)  # a previous attempt got this far
    moved: list[int] = []
    t.download(
        [Transfer("ns/ds/records.parquet", dst, 5000, sha(b"R" * 5000))],
        progress=lambda p, n: moved.append(n),
    )
    assert dst.read_bytes() == b"R" * 5000
    assert sum(moved) == 2000


def test_corrupt_partial_is_restarted_and_wrong_sha_fails(base, tmp_path):
    t = LocalTransport(base)
    dst = tmp_path / "records.parquet"
    dst.write_bytes(b"X" * 3000)  # garbage prefix: resume gives a bad hash, the retry starts over
    t.download([Transfer("ns/ds/records.parquet", dst, 5000, sha(b"R" * 5000))])
    assert dst.read_bytes() == b"R" * 5000
    with pytest.raises(VerificationError, match="sha256 mismatch"):
        t.download([Transfer("ns/ds/records.parquet", tmp_path / "other", 5000, sha(b"nope"))])


def test_download_of_missing_or_special_source_fails(base, tmp_path):
    t = LocalTransport(base)
    with pytest.raises(TransferError, match="missing"):
        t.download([Transfer("ns/ds/nothing", tmp_path / "n", 1, sha(b"x"))])
    os.mkfifo(base / "ns" / "ds" / "fifo")
    with pytest.raises(TransferError, match="not a regular file"):
        t.download([Transfer("ns/ds/fifo", tmp_path / "f", 1, sha(b"x"))])


def test_upload_creates_parents_then_apply_renames_and_removes(base, tmp_path):
    t = LocalTransport(base)
    src = tmp_path / "new.parquet"
    src.write_bytes(b"N" * 100)
    t.upload([Transfer("ns/ds/_derived/y/.usrbatch-tmp-ab-new.parquet", src, 100, sha(b"N" * 100))])
    assert (base / "ns/ds/_derived/y/.usrbatch-tmp-ab-new.parquet").exists()
    t.apply(
        [("ns/ds/_derived/y/.usrbatch-tmp-ab-new.parquet", "ns/ds/_derived/y/new.parquet")],
        ["ns/ds/_derived/x/part-1.parquet", "ns/ds/not-there"],
    )
    assert (base / "ns/ds/_derived/y/new.parquet").read_bytes() == b"N" * 100
    assert not (base / "ns/ds/_derived/x").exists()  # pruned when emptied
    with pytest.raises(TransferError, match="unsafe"):
        t.apply([], ["../escape"])
    with pytest.raises(TransferError, match="missing"):
        t.apply([("ns/ds/gone", "ns/ds/x")], [])


def test_apply_checks_uploaded_hashes_and_returns_inventory_in_one_call(base, tmp_path):
    t = LocalTransport(base)
    (base / "ns/ds/.usrbatch-tmp-x").write_bytes(b"X")
    with pytest.raises(
        VerificationError,
        match=r"^Remote apply on local:.* refused: uploaded ns/ds/\.usrbatch-tmp-x does not match",
    ):
        t.apply([("ns/ds/.usrbatch-tmp-x", "ns/ds/x")], [], verify={"ns/ds/.usrbatch-tmp-x": sha(b"Y")})
    assert not (base / "ns/ds/x").exists() and not (base / "ns/ds/.usrbatch-tmp-x").exists()
    (base / "ns/ds/.usrbatch-tmp-x").write_bytes(b"Y")
    after = t.apply(
        [("ns/ds/.usrbatch-tmp-x", "ns/ds/x")],
        [],
        verify={"ns/ds/.usrbatch-tmp-x": sha(b"Y")},
        inventory="ns/ds",
    )
    assert after is not None and after.files == t.inventory("ns/ds").files
    assert after.files["x"].sha256 == sha(b"Y")
    assert t.apply([], ["ns/ds/not-there"]) is None


def test_lease_excludes_other_holders_and_times_out(base):
    t = LocalTransport(base)
    with t.lease("ns/ds", timeout=1, events="shared") as lease:
        assert lease.alive()
        with (
            pytest.raises(
                TransferError, match=r"Remote dataset lock for 'ns/ds' timeout on local:.* after 0.2 seconds"
            ),
            LocalTransport(base).lease("ns/ds", timeout=0.2),
        ):
            pass
    assert not lease.alive()
    with t.lease("ns/ds", timeout=1):  # released: free again
        pass


def test_lease_with_inventory_takes_it_under_the_lock(base):
    t = LocalTransport(base)
    (base / "ns" / "new").mkdir(parents=True)
    (base / "ns" / "new" / "x").write_bytes(b"X")
    with t.lease("ns/new", timeout=1, inventory=True) as lease:
        assert lease.inventory is not None and lease.inventory.files == t.inventory("ns/new").files
        assert list(lease.inventory.files) == ["x"]  # the lock files are not payload
    with t.lease("ns/new", timeout=1) as plain:
        assert plain.inventory is None


def test_event_lease_blocks_an_exclusive_appender_until_release(base):
    import fcntl

    t = LocalTransport(base)
    acquired: list[float] = []

    def appender():
        fd = os.open(base / "ns/ds/.events.lock", os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        acquired.append(time.monotonic())
        os.close(fd)

    with t.lease("ns/ds", timeout=1, events="shared"):
        th = threading.Thread(target=appender)
        th.start()
        time.sleep(0.3)
        assert acquired == []
        released = time.monotonic()
    th.join(5)
    assert acquired and acquired[0] >= released


def test_lease_creates_the_dataset_dir(base):
    with LocalTransport(base).lease("ns/new", timeout=1):
        assert (base / "ns" / "new" / ".usr.lock").exists()


# -- containment: nothing is written outside base_dir (as the ssh remote) -----------------------


def _entries(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def test_every_operation_refuses_a_path_out_of_base_through_a_symlink(base, tmp_path):
    outside = tmp_path / "outside"
    (outside / "ds").mkdir(parents=True)
    os.symlink(outside, base / "link")
    t = LocalTransport(base)
    src = tmp_path / "src"
    src.write_bytes(b"S")
    calls = {
        "inventory": lambda: t.inventory("link/ds"),
        "lease": lambda: t.lease("link/new", timeout=1).__enter__(),
        "upload": lambda: t.upload([Transfer("link/ds/deep/.usrbatch-tmp-x", src, 1, sha(b"S"))]),
        "download": lambda: t.download([Transfer("link/ds/x", tmp_path / "dl", 1, sha(b"S"))]),
        "apply": lambda: t.apply([("ns/ds/records.parquet", "link/ds/records.parquet")], []),
        "stat_file": lambda: t.stat_file("link/ds/x"),
    }
    for name, call in calls.items():
        with pytest.raises(TransferError, match="escapes base_dir through a symlink"):
            call()
        assert _entries(outside) == ["ds"], name
    assert (base / "ns/ds/records.parquet").exists()  # the refused rename moved nothing


def test_a_symlink_that_stays_inside_base_is_followed(base):
    os.symlink(base / "ns", base / "alias")
    t = LocalTransport(base)
    assert t.inventory("alias/ds").files.keys() == t.inventory("ns/ds").files.keys()
    with t.lease("alias/ds2", timeout=1):
        assert (base / "ns" / "ds2" / ".usr.lock").exists()


def test_lease_refuses_a_dataset_dir_symlinked_out_of_base(base, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, base / "ns" / "evil")
    with (
        pytest.raises(
            TransferError, match=r"Remote dataset lock for 'ns/evil' on local:.* refused: .*escapes"
        ),
        LocalTransport(base).lease("ns/evil", timeout=1),
    ):
        pass
    assert list(outside.iterdir()) == []


def test_missing_base_dir_is_reported_with_the_fix(tmp_path):
    missing = tmp_path / "absent" / "usr"
    t = LocalTransport(missing)
    for call in (lambda: t.inventory("ns/ds"), lambda: t.lease("ns/ds", timeout=1).__enter__()):
        with pytest.raises(TransferError, match=rf"base_dir {missing} does not exist; create it \(mkdir -p"):
            call()
    assert not (tmp_path / "absent").exists()
