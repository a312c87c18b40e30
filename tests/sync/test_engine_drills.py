"""The fidelity drills of the runbooks, with real misbehaving transports (subclasses of the local
transport that drop or damage one item) and real interruptions (a killed process)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest
from builders import add_event, make_dataset, snapshot_all, tree, write_part, write_records

from usrbatch.errors import TransferError, VerificationError
from usrbatch.sync import engine
from usrbatch.sync import staging as stg
from usrbatch.sync.options import SyncOptions

DS = "densegen/demo"


class Faulty:
    """A real transport (local or ssh) with one operation made to misbehave."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)


class DropDerivedDownload(Faulty):
    """Downloads everything except the first `_derived` file (a partial payload)."""

    def download(self, items, *, progress=None):
        dropped = next(i for i in items if "/_derived/" in i.remote)
        self.inner.download([i for i in items if i is not dropped], progress=progress)


class DamageDerivedDownload(Faulty):
    """Delivers a `_derived` file with other bytes than the remote holds."""

    def download(self, items, *, progress=None):
        self.inner.download(items, progress=progress)
        victim = next(i for i in items if "/_derived/" in i.remote)
        victim.local.write_bytes(b"tampered")


class DropOverlayRename(Faulty):
    """`apply` forgets to rename one overlay into place (it stays under its temp name)."""

    def apply(self, renames, removals, **kw):
        dropped = next((r for r in renames if "/_derived/" in r[1]), None)
        return self.inner.apply([r for r in renames if r is not dropped], removals, **kw)


class FailSecondUpload(Faulty):
    def upload(self, items, *, progress=None):
        self.inner.upload(items[:1], progress=progress)
        raise TransferError("connection dropped during upload")


class PlantSymlink(Faulty):
    """A staged payload that contains a symlink (what `rsync -l` would copy)."""

    def download(self, items, *, progress=None):
        self.inner.download(items, progress=progress)
        root = next(p for p in items[0].local.parents if p.name.startswith(".usr-pull-"))
        (root / "_derived").mkdir(exist_ok=True)
        os.symlink("/etc/hostname", root / "_derived" / "danger.link")


def _remote_batch(remote):
    write_records(remote / "records.parquet", 7, tag="n")
    write_part(remote, "densegen")
    add_event(remote, "import_rows", rows=4)


@pytest.fixture
def synced(sides):
    make_dataset(sides.remote_root, DS)
    engine.pull(sides.local_root, DS, sides.transport)
    return sides


def test_drill1_pull_fails_post_pull_sidecars_on_missing_derived_payload(synced):
    _remote_batch(synced.remote_root / DS)
    before = snapshot_all(synced.local_root / DS)
    bad = DropDerivedDownload(synced.transport)
    with pytest.raises(VerificationError, match=r"^post-pull-sidecars: sidecar mismatch; .*_derived files"):
        engine.pull(synced.local_root, DS, bad)
    assert snapshot_all(synced.local_root / DS) == before  # records.parquet untouched
    assert not list(synced.local_root.glob(".usr-pull-*"))


def test_pull_without_sidecars_still_refuses_incomplete_staging(synced):
    _remote_batch(synced.remote_root / DS)
    before = tree(synced.local_root / DS)
    bad = DropDerivedDownload(synced.transport)
    with pytest.raises(VerificationError, match="post-pull: staged payload differs"):
        engine.pull(synced.local_root, DS, bad, SyncOptions(sidecars=False, content_hashes=False))
    assert tree(synced.local_root / DS) == before


def test_pull_fails_on_derived_hash_mismatch(synced):
    _remote_batch(synced.remote_root / DS)
    before = tree(synced.local_root / DS)
    with pytest.raises(VerificationError, match=r"post-pull-sidecars: sidecar mismatch; _derived hashes"):
        engine.pull(synced.local_root, DS, DamageDerivedDownload(synced.transport))
    assert tree(synced.local_root / DS) == before


def test_drill2_push_fails_post_push_sidecars_when_remote_misses_overlays(synced):
    local = synced.local_root / DS
    write_part(local, "infer")
    add_event(local, "write_overlay_part", namespace="infer")
    bad = DropOverlayRename(synced.transport)
    with pytest.raises(VerificationError, match=r"^post-push-sidecars: sidecar mismatch; _derived files"):
        engine.push(synced.local_root, DS, bad)
    leftovers = [p for p in (synced.remote_root / DS).rglob("*") if p.name.startswith(".usrbatch-tmp-")]
    assert leftovers == []


def test_failed_upload_leaves_both_sides_as_they_were(synced):
    local = synced.local_root / DS
    write_part(local, "infer")
    write_part(local, "infer")
    add_event(local, "write_overlay_part", namespace="infer")
    remote_before = tree(synced.remote_root / DS)
    local_before = tree(local)
    with pytest.raises(TransferError, match="connection dropped"):
        engine.push(synced.local_root, DS, FailSecondUpload(synced.transport))
    assert tree(synced.remote_root / DS) == remote_before
    assert tree(local) == local_before
    everything = [p.name for p in (synced.remote_root / DS).rglob("*")]
    assert not [n for n in everything if n.startswith(".usrbatch-tmp-")]
    # and a retry converges
    engine.push(synced.local_root, DS, synced.transport)
    assert tree(synced.remote_root / DS) == tree(local)


def test_local_event_append_during_pull_download_is_refused(synced):
    _remote_batch(synced.remote_root / DS)
    local = synced.local_root / DS
    records_before = (local / "records.parquet").read_bytes()
    appended = []

    def progress_factory(total):
        def on_bytes(path, n):
            if not appended:
                add_event(local, "attach", ns="concurrent")  # a local writer sneaks in
                appended.append(path)

        return on_bytes

    with pytest.raises(VerificationError, match="Local event log changed while the full pull was staged"):
        engine.pull(synced.local_root, DS, synced.transport, progress=progress_factory)
    assert appended
    assert (local / "records.parquet").read_bytes() == records_before
    assert b"concurrent" in (local / ".events.log").read_bytes()  # the append is kept
    assert not list(synced.local_root.glob(".usr-pull-*"))


CRASH_SCRIPT = """
import os, sys
from pathlib import Path
from usrbatch.sync import engine
from usrbatch.transport.local import LocalTransport

real = os.replace
count = [0]

def dying_replace(src, dst, *a, **kw):
    if ".usr-pull-" in str(src):
        if count[0] == int(sys.argv[3]):
            os._exit(17)  # a hard crash: no finally, no cleanup
        count[0] += 1
    return real(src, dst, *a, **kw)

os.replace = dying_replace
engine.pull(Path(sys.argv[1]), "densegen/demo", LocalTransport(Path(sys.argv[2])))
"""


def test_journal_rolls_forward_after_crash_mid_promotion(synced):
    remote = synced.remote_root / DS
    _remote_batch(remote)
    write_part(remote, "densegen")
    child = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, str(synced.local_root), str(synced.remote_root), "2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 17, child.stderr
    pending = stg.pending_journals(synced.local_root, DS, synced.local_root / DS)
    assert len(pending) == 1
    assert tree(synced.local_root / DS) != tree(remote)  # half promoted
    diff = engine.plan_diff(synced.local_root, DS, synced.transport)
    assert engine.PENDING_NOTE in diff.notes
    res = engine.pull(synced.local_root, DS, synced.transport)
    assert any("interrupted pull promotion" in n for n in res.notes)
    assert tree(synced.local_root / DS) == tree(remote)
    assert (synced.local_root / DS / ".events.log").read_bytes() == (remote / ".events.log").read_bytes()
    assert not list(synced.local_root.glob(".usr-pull-*"))


def test_abandoned_staging_without_journal_is_removed(synced):
    stale = stg.create_staging(synced.local_root, DS)
    (stale / "records.parquet").write_bytes(b"partial")
    _remote_batch(synced.remote_root / DS)
    engine.pull(synced.local_root, DS, synced.transport)
    assert not stale.exists()
    assert tree(synced.local_root / DS) == tree(synced.remote_root / DS)


def test_staged_symlink_is_rejected_before_promotion(synced):
    _remote_batch(synced.remote_root / DS)
    before = tree(synced.local_root / DS)
    with pytest.raises(
        VerificationError, match="Staged pull payload contains symlink entry: _derived/danger.link"
    ):
        engine.pull(synced.local_root, DS, PlantSymlink(synced.transport))
    assert tree(synced.local_root / DS) == before


def test_failed_bootstrap_pull_leaves_no_local_dataset_dir(sides):
    make_dataset(sides.remote_root, DS)
    with pytest.raises(VerificationError, match="post-pull-sidecars"):
        engine.pull(sides.local_root, DS, DropDerivedDownload(sides.transport))
    assert list(sides.local_root.iterdir()) == []


def test_push_holds_the_local_event_lock_through_remote_verification(synced):
    """A local appender that starts during the upload lands only after the push is verified,
    and its line is not pushed."""
    from usrbatch.dataset.event_append import append_event

    local = synced.local_root / DS
    write_part(local, "infer")
    add_event(local, "write_overlay_part", namespace="infer")
    pushed_log = (local / ".events.log").read_bytes()
    done: list[float] = []
    threads: list[threading.Thread] = []

    def appender():
        append_event(
            local, "attach", args={"ns": "late"}, root=synced.local_root, dataset_name=DS, registry_hash=None
        )
        done.append(time.monotonic())

    def progress_factory(total):
        def on_bytes(path, n):
            if not threads:
                th = threading.Thread(target=appender)
                threads.append(th)
                th.start()
                time.sleep(0.3)  # the appender is now blocked on the event lock
                assert done == []

        return on_bytes

    class CheckDuringVerify(Faulty):
        inventories = 0

        def apply(self, renames, removals, **kw):
            after = self.inner.apply(renames, removals, **kw)
            if threads and kw.get("inventory"):  # the post-apply inventory: appender still waiting
                assert done == []
                CheckDuringVerify.inventories += 1
            return after

    engine.push(synced.local_root, DS, CheckDuringVerify(synced.transport), progress=progress_factory)
    assert CheckDuringVerify.inventories == 1
    threads[0].join(10)
    assert done
    assert (synced.remote_root / DS / ".events.log").read_bytes() == pushed_log
    assert (local / ".events.log").read_bytes().startswith(pushed_log)
    assert b"late" in (local / ".events.log").read_bytes()


class CutDownload(Faulty):
    """The connection drops half-way through the largest file."""

    def download(self, items, *, progress=None):
        big = max(items, key=lambda i: i.size)
        self.inner.download([i for i in items if i is not big], progress=progress)
        head = synced_bytes(self.remote_root / big.remote)[: big.size // 2]
        big.local.parent.mkdir(parents=True, exist_ok=True)
        big.local.write_bytes(head)
        raise TransferError("connection reset by peer")


def synced_bytes(path):
    with open(path, "rb") as fh:
        return fh.read()


def test_interrupted_pull_download_resumes_on_the_next_run(synced):
    remote = synced.remote_root / DS
    write_records(remote / "records.parquet", 4000, tag="big")  # the largest file by far
    write_part(remote, "densegen")
    add_event(remote, "import_rows", rows=4000)
    before = tree(synced.local_root / DS)
    cut = CutDownload(synced.transport)
    cut.remote_root = synced.remote_root
    with pytest.raises(TransferError, match="connection reset"):
        engine.pull(synced.local_root, DS, cut)
    assert tree(synced.local_root / DS) == before  # nothing promoted
    [kept] = list(synced.local_root.glob(".usr-pull-*"))
    assert (kept / "records.parquet").stat().st_size < (remote / "records.parquet").stat().st_size
    moved: list[int] = []
    res = engine.pull(
        synced.local_root, DS, synced.transport, progress=lambda total: lambda p, n: moved.append(n)
    )
    assert res.transfer_state == "TRANSFERRED"
    assert sum(moved) < res.bytes_sent  # the staged files and the first half were not re-sent
    assert tree(synced.local_root / DS) == tree(remote)
    assert not list(synced.local_root.glob(".usr-pull-*"))


def test_remote_event_writer_waits_until_the_push_is_verified(synced):
    """The remote lease holds `.events.lock` shared: a remote appender lands after verification."""
    from usrbatch.dataset.event_append import append_event

    local, remote = synced.local_root / DS, synced.remote_root / DS
    add_event(local, "write_overlay_part", namespace="infer")
    pushed = (local / ".events.log").read_bytes()
    done: list[bool] = []
    threads: list[threading.Thread] = []

    def remote_appender():
        append_event(
            remote,
            "import_rows",
            args={"rows": 1},
            root=synced.remote_root,
            dataset_name=DS,
            registry_hash=None,
        )
        done.append(True)

    class StartAppenderOnUpload(Faulty):
        def upload(self, items, *, progress=None):
            th = threading.Thread(target=remote_appender)
            threads.append(th)
            th.start()
            time.sleep(0.3)
            self.inner.upload(items, progress=progress)

        def inventory(self, rel_dir, **kw):
            inv = self.inner.inventory(rel_dir, **kw)
            if threads:
                assert done == []  # still blocked while the engine verifies
            return inv

    engine.push(synced.local_root, DS, StartAppenderOnUpload(synced.transport))
    threads[0].join(10)
    assert done
    after = (remote / ".events.log").read_bytes()
    assert after.startswith(pushed) and after != pushed  # the remote line came after the pushed history
