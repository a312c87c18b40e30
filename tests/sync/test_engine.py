"""The sync engine end to end against a real transport (local here; ssh in tests/integration).

Every test works on real dataset trees and checks bytes on disk. The transport comes from the
`sides` fixture, so tests/integration/test_sync_engine.py runs these same scenarios over SSH.
"""

from __future__ import annotations

import os
import shutil

import pytest
from builders import add_event, make_dataset, snapshot_all, tree, write_part, write_records

from usrbatch.errors import DatasetError, TransferError, VerificationError
from usrbatch.sync import engine
from usrbatch.sync.options import SyncOptions
from usrbatch.transport.local import LocalTransport

DS = "densegen/demo"


def both_equal(sides) -> None:
    local = tree(sides.local_root / DS)
    remote = tree(sides.remote_root / DS)
    assert local == remote
    assert (sides.local_root / DS / ".events.log").read_bytes() == (
        sides.remote_root / DS / ".events.log"
    ).read_bytes()


def test_bootstrap_pull_creates_identical_local_dataset(sides):
    make_dataset(sides.remote_root, DS)
    res = engine.pull(sides.local_root, DS, sides.transport)
    assert res.transfer_state == "TRANSFERRED"
    assert res.locked
    assert res.files_sent == len(tree(sides.remote_root / DS))
    both_equal(sides)
    assert not list(sides.local_root.glob(".usr-pull-*"))


def test_bootstrap_push_creates_identical_remote_dataset(sides):
    make_dataset(sides.local_root, DS)
    res = engine.push(sides.local_root, DS, sides.transport)
    assert res.transfer_state == "TRANSFERRED"
    both_equal(sides)
    leftovers = [p for p in (sides.remote_root / DS).rglob("*") if p.name.startswith(".usrbatch-tmp-")]
    assert leftovers == []


def test_iterative_pull_writeback_push_converges(sides):
    remote = make_dataset(sides.remote_root, DS)
    engine.pull(sides.local_root, DS, sides.transport)
    # HPC side: a new DenseGen batch (primary rewrite + snapshot + part + event).
    write_records(remote / "records.parquet", 6, tag="b")
    write_records(remote / "_snapshots" / "records-20260102T000000123456.parquet", 6, tag="b")
    write_part(remote, "densegen")
    add_event(remote, "import_rows", rows=3)
    res = engine.pull(sides.local_root, DS, sides.transport)
    assert res.transfer_state == "TRANSFERRED"
    # Only the changed files travelled: 4 of them.
    assert res.files_sent == 4
    both_equal(sides)
    # Local write-back (Infer): a new overlay part and its event, then push.
    local = sides.local_root / DS
    write_part(local, "infer")
    add_event(local, "write_overlay_part", namespace="infer")
    res = engine.push(sides.local_root, DS, sides.transport)
    assert res.transfer_state == "TRANSFERRED"
    assert res.files_sent == 2
    both_equal(sides)
    diff = engine.plan_diff(sides.local_root, DS, sides.transport)
    assert diff.transfer_state == "DIFF-ONLY"
    assert not diff.summary.has_change


def test_noop_repeats_take_no_locks(sides):
    make_dataset(sides.remote_root, DS)
    engine.pull(sides.local_root, DS, sides.transport)
    for lock in (sides.local_root / DS / ".usr.lock", sides.remote_root / DS / ".usr.lock"):
        lock.unlink(missing_ok=True)
    pull = engine.pull(sides.local_root, DS, sides.transport)
    push = engine.push(sides.local_root, DS, sides.transport)
    assert (pull.transfer_state, pull.locked) == ("NO-OP", False)
    assert (push.transfer_state, push.locked) == ("NO-OP", False)
    assert not (sides.local_root / DS / ".usr.lock").exists()
    assert not (sides.remote_root / DS / ".usr.lock").exists()


def test_dry_runs_change_nothing_anywhere(sides):
    make_dataset(sides.remote_root, DS)
    before = (snapshot_all(sides.local_root), snapshot_all(sides.remote_root))
    res = engine.pull(sides.local_root, DS, sides.transport, SyncOptions(dry_run=True))
    assert res.transfer_state == "DRY-RUN"
    assert res.summary.has_change
    assert (snapshot_all(sides.local_root), snapshot_all(sides.remote_root)) == before
    assert not (sides.local_root / DS).exists()

    make_dataset(sides.local_root, "other/ds")
    before = (snapshot_all(sides.local_root), snapshot_all(sides.remote_root))
    res = engine.push(sides.local_root, "other/ds", sides.transport, SyncOptions(dry_run=True))
    assert res.transfer_state == "DRY-RUN"
    assert any("Dry-run observed a valid remote event-log prefix" in n for n in res.notes)
    assert (snapshot_all(sides.local_root), snapshot_all(sides.remote_root)) == before
    assert not (sides.remote_root / "other" / "ds").exists()


def test_same_name_rewrite_is_detected_and_synced(sides):
    """The public tool compares _auxiliary by names only and misses this rewrite."""
    make_dataset(sides.remote_root, DS)
    engine.pull(sides.local_root, DS, sides.transport)
    note = sides.local_root / DS / "_registry" / "registry.abc.yaml"
    note.write_text("namespaces: {infer: {}}\n")
    diff = engine.plan_diff(sides.local_root, DS, sides.transport)
    assert diff.summary.has_change
    assert diff.summary.changes["aux_files_diff"] is True
    assert diff.summary.changes["aux_content_diff"] is True
    assert diff.summary.aux_local_files == diff.summary.aux_remote_files
    res = engine.push(sides.local_root, DS, sides.transport)
    assert res.files_sent == 1
    both_equal(sides)


def test_meta_rewrite_with_same_mtime_is_a_change(sides):
    make_dataset(sides.remote_root, DS)
    engine.pull(sides.local_root, DS, sides.transport)
    meta = sides.local_root / DS / "meta.md"
    st = meta.stat()
    meta.write_text(meta.read_text().replace("created", "edited!"))
    os.utime(meta, ns=(st.st_atime_ns, st.st_mtime_ns))
    diff = engine.plan_diff(sides.local_root, DS, sides.transport)
    assert diff.summary.changes["meta_content_diff"] is True
    assert diff.summary.changes["meta_mtime_diff"] is False
    assert diff.summary.has_change


def test_pull_mirrors_deletions_but_keeps_runtime_files(sides):
    make_dataset(sides.remote_root, DS)
    engine.pull(sides.local_root, DS, sides.transport)
    local = sides.local_root / DS
    stray = local / "_artifacts" / "stray" / "local-only.txt"
    stray.parent.mkdir(parents=True)
    stray.write_text("x")
    res = engine.pull(sides.local_root, DS, sides.transport)
    assert res.files_deleted == 1
    assert not stray.exists()
    assert not stray.parent.exists()  # emptied dirs pruned
    assert (local / ".usr.lock").exists()
    both_equal(sides)


def test_pull_refuses_missing_remote_primary_before_any_lock(sides):
    d = make_dataset(sides.remote_root, DS)
    (d / "records.parquet").unlink()
    with pytest.raises(
        DatasetError, match="Refusing pull for dataset 'densegen/demo': remote records.parquet is missing."
    ):
        engine.pull(sides.local_root, DS, sides.transport)
    assert not (sides.local_root / DS).exists()
    assert not (d / ".usr.lock").exists()


def test_push_refuses_missing_local_primary(sides):
    d = make_dataset(sides.local_root, DS)
    (d / "records.parquet").unlink()
    with pytest.raises(DatasetError, match="local records.parquet is missing"):
        engine.push(sides.local_root, DS, sides.transport)
    assert not (sides.remote_root / DS).exists()


def test_branched_histories_rejected_both_ways(sides):
    make_dataset(sides.remote_root, DS)
    engine.pull(sides.local_root, DS, sides.transport)
    add_event(sides.local_root / DS, "attach", ns="infer")
    add_event(sides.remote_root / DS, "import_rows", rows=9)
    local_before = snapshot_all(sides.local_root / DS)
    remote_before = snapshot_all(sides.remote_root / DS)
    with pytest.raises(
        VerificationError, match="Remote event log is not a prefix of the locked local event log"
    ):
        engine.push(sides.local_root, DS, sides.transport)
    with pytest.raises(VerificationError, match="Remote event log does not extend the local event history"):
        engine.pull(sides.local_root, DS, sides.transport)
    assert snapshot_all(sides.remote_root / DS) == remote_before
    after = snapshot_all(sides.local_root / DS)
    assert {k: v for k, v in after.items() if ".lock" not in k} == {
        k: v for k, v in local_before.items() if ".lock" not in k
    }
    assert not list(sides.local_root.glob(".usr-pull-*"))


def test_equal_length_divergent_logs_are_a_change_and_rejected(sides):
    make_dataset(sides.remote_root, DS)
    engine.pull(sides.local_root, DS, sides.transport)
    add_event(sides.local_root / DS, "attach", ns="aaaa")
    add_event(sides.remote_root / DS, "attach", ns="bbbb")
    diff = engine.plan_diff(sides.local_root, DS, sides.transport)
    assert diff.summary.events_local_lines == diff.summary.events_remote_lines
    assert diff.summary.changes["events_content_diff"] is True
    with pytest.raises(VerificationError, match="does not extend the local event history"):
        engine.pull(sides.local_root, DS, sides.transport)
    with pytest.raises(VerificationError, match="not a prefix"):
        engine.push(sides.local_root, DS, sides.transport, SyncOptions(dry_run=True))


def test_symlink_in_remote_dataset_is_refused_before_any_write(sides):
    d = make_dataset(sides.remote_root, DS)
    os.symlink("/etc/passwd", d / "_derived" / "danger.link")
    with pytest.raises(TransferError, match=r"symlink.*_derived/danger.link"):
        engine.pull(sides.local_root, DS, sides.transport)
    assert not (sides.local_root / DS).exists()


def test_fifo_in_local_dataset_is_refused(sides):
    d = make_dataset(sides.local_root, DS)
    os.mkfifo(d / "_artifacts" / "pipe")
    with pytest.raises(TransferError, match=r"special.*_artifacts/pipe"):
        engine.push(sides.local_root, DS, sides.transport)
    assert not (sides.remote_root / DS).exists()


def test_sync_never_appends_events(sides):
    make_dataset(sides.remote_root, DS)
    engine.pull(sides.local_root, DS, sides.transport)
    remote_log = (sides.remote_root / DS / ".events.log").read_bytes()
    add_event(sides.local_root / DS, "attach", ns="infer")
    local_log = (sides.local_root / DS / ".events.log").read_bytes()
    engine.push(sides.local_root, DS, sides.transport)
    assert (sides.local_root / DS / ".events.log").read_bytes() == local_log
    assert (sides.remote_root / DS / ".events.log").read_bytes() == local_log
    assert local_log.startswith(remote_log)


def test_primary_only_pull_leaves_sidecars_and_log_alone(sides):
    remote = make_dataset(sides.remote_root, DS)
    engine.pull(sides.local_root, DS, sides.transport)
    write_records(remote / "records.parquet", 9, tag="z")
    write_part(remote, "densegen")
    add_event(remote, "import_rows", rows=6)
    opts = SyncOptions(primary_only=True, sidecars=False, content_hashes=False)
    res = engine.pull(sides.local_root, DS, sides.transport, opts)
    assert res.files_sent == 1
    local = sides.local_root / DS
    assert (local / "records.parquet").read_bytes() == (remote / "records.parquet").read_bytes()
    assert (local / ".events.log").read_bytes() != (remote / ".events.log").read_bytes()
    assert len(list((local / "_derived" / "densegen").iterdir())) == 1


def test_verify_parquet_mode_reports_shapes(sides):
    make_dataset(sides.remote_root, DS, rows=4)
    res = engine.pull(sides.local_root, DS, sides.transport, SyncOptions(verify="parquet"))
    assert res.summary.verify_mode == "parquet"
    assert res.summary.primary_remote.rows == 4
    assert res.summary.primary_remote.cols == 7  # the core columns
    both_equal(sides)


def test_corrupt_local_parquet_in_parquet_mode(sides):
    make_dataset(sides.remote_root, DS)
    engine.pull(sides.local_root, DS, sides.transport)
    (sides.local_root / DS / "records.parquet").write_bytes(b"not parquet")
    with pytest.raises(VerificationError, match="Failed to read local parquet file"):
        engine.plan_diff(
            sides.local_root,
            DS,
            sides.transport,
            SyncOptions(verify="parquet", sidecars=False, content_hashes=False),
        )


def test_lock_timeout_on_busy_remote(sides):
    from usrbatch.agent import remote as agent

    make_dataset(sides.remote_root, DS)
    with agent.hold_lock(str(sides.remote_root / DS), 5), pytest.raises(TransferError, match="timeout"):
        engine.pull(sides.local_root, DS, sides.transport, SyncOptions(lock_timeout=0.2))
    assert not list(sides.local_root.glob(".usr-pull-*"))


def test_remote_dataset_moved_away_mid_flight_is_refused(sides, monkeypatch):
    """A file deleted between inventory and download: the download fails, local is untouched."""
    remote = make_dataset(sides.remote_root, DS)
    engine.pull(sides.local_root, DS, sides.transport)
    write_part(remote, "densegen")
    add_event(remote, "x")
    before = tree(sides.local_root / DS)
    real = sides.transport.download

    def vanish(items, *, progress=None):
        for item in items:
            if item.remote.endswith(".parquet"):
                (sides.remote_root / item.remote).unlink()
        return real(items, progress=progress)

    monkeypatch.setattr(sides.transport, "download", vanish)
    with pytest.raises(TransferError, match="missing"):
        engine.pull(sides.local_root, DS, sides.transport)
    assert tree(sides.local_root / DS) == before
    assert len(list(sides.local_root.glob(".usr-pull-*"))) == 1  # kept for a resumed retry
    monkeypatch.setattr(sides.transport, "download", real)
    engine.pull(sides.local_root, DS, sides.transport)  # re-plans against what the remote now holds
    assert tree(sides.local_root / DS) == tree(sides.remote_root / DS)
    assert not list(sides.local_root.glob(".usr-pull-*"))


def test_copy_of_tree_helpers_detect_difference(tmp_path):
    a = make_dataset(tmp_path / "a", DS)
    b = tmp_path / "b" / DS
    shutil.copytree(a, b)
    assert tree(a) == tree(b)
    (b / "meta.md").write_text("changed")
    assert tree(a) != tree(b)


def test_pulled_files_are_in_the_local_hash_cache_so_the_next_inventory_reads_nothing(sides):
    from usrbatch.sync.inventory import local_inventory

    remote = make_dataset(sides.remote_root, DS)
    engine.pull(sides.local_root, DS, sides.transport)
    local = sides.local_root / DS
    inv = local_inventory(local)
    assert inv.hashed_bytes == 0
    assert {p: e.sha256 for p, e in inv.files.items()} == {
        p: e.sha256 for p, e in local_inventory(remote).files.items()
    }
    # an incremental pull: only the changed file is re-pulled, and it too is cached
    write_part(remote, "densegen")
    engine.pull(sides.local_root, DS, sides.transport)
    assert local_inventory(local).hashed_bytes == 0
    # a local edit after the pull is still noticed (the cache key is the fresh stat)
    edited = local / "meta.md"
    edited.write_text(edited.read_text() + "edited\n")
    assert local_inventory(local).hashed_bytes == edited.stat().st_size


def test_push_removes_temps_left_by_dead_pushes_but_a_noop_touches_nothing(sides):
    """Upload temps are never part of a dataset (not inventoried, not diffed), and the next
    push that holds the lease removes those it does not need; a no-op push leaves them."""
    ds = "densegen/demo"
    local = make_dataset(sides.local_root, ds)
    engine.push(sides.local_root, ds, sides.transport)
    remote = sides.remote_root / ds
    stale = [
        remote / ".usrbatch-tmp-aaaaaaaaaaaaaaaa-records.parquet",
        remote / "_derived" / "densegen" / ".usrbatch-tmp-b-x",
    ]
    for path in stale:
        path.write_bytes(b"partial")
    assert engine.plan_diff(sides.local_root, ds, sides.transport).summary.has_change is False
    assert engine.push(sides.local_root, ds, sides.transport).files_sent == 0
    assert all(p.exists() for p in stale)  # no lease taken, nothing removed
    write_part(local, "infer")
    assert engine.push(sides.local_root, ds, sides.transport).files_sent == 1
    assert not any(p.exists() for p in stale)
    assert tree(remote) == tree(local)


def test_push_keeps_every_source_mtime_as_rsync_t(sides):
    """Every file a push writes gets its local source's mtime (ns): the public tool compares
    meta.md by mtime, so otherwise its `diff` says CHANGES after our push (issue 9, point 1)."""
    local = make_dataset(sides.local_root, DS)
    for i, path in enumerate(sorted(p for p in local.rglob("*") if p.is_file())):
        os.utime(
            path, ns=(1_700_000_000_000_000_000 + i * 1_000_003, 1_700_000_000_000_000_000 + i * 1_000_003)
        )
    engine.push(sides.local_root, DS, sides.transport)
    write_part(local, "infer")
    (local / "meta.md").write_text("# changed\n")
    os.utime(local / "meta.md", ns=(1_767_225_600_987_654_321, 1_767_225_600_987_654_321))
    res = engine.push(sides.local_root, DS, sides.transport)
    assert res.transfer_state == "TRANSFERRED"
    mtimes = {}
    for side in (sides.local_root, sides.remote_root):
        mtimes[side] = {
            p.relative_to(side / DS).as_posix(): p.stat().st_mtime_ns
            for p in (side / DS).rglob("*")
            if p.is_file() and p.relative_to(side / DS).as_posix() in tree(side / DS)
        }
    assert mtimes[sides.remote_root] == mtimes[sides.local_root]
    assert mtimes[sides.remote_root]["meta.md"] == 1_767_225_600_987_654_321


def test_synced_files_follow_the_umask_like_locally_written_ones(sides):
    """Under umask 002 every file a sync gives a dataset is group-writable, as records.parquet is."""
    from usrbatch.dataset.records import import_records, init_dataset

    previous = os.umask(0o002)
    try:
        ref = init_dataset(sides.remote_root, DS).dataset
        import_records(ref, [{"sequence": "ACGT"}])
        engine.pull(sides.local_root, DS, sides.transport)
        shutil.copy(sides.remote_root / "registry.yaml", sides.local_root / "registry.yaml")  # root file
        import_records(ref.__class__(sides.local_root, DS), [{"sequence": "TTTT"}])
        engine.push(sides.local_root, DS, sides.transport)
    finally:
        os.umask(previous)
    # Over ssh the remote's files are created by its sftp-server, under the login's own umask.
    checked = [sides.local_root] + (
        [sides.remote_root] if isinstance(sides.transport, LocalTransport) else []
    )
    for side in checked:
        files = [p for p in (side / DS).rglob("*") if p.is_file() and not p.name.startswith(".usr.lease.")]
        modes = {p.relative_to(side).as_posix(): oct(p.stat().st_mode & 0o777) for p in files}
        assert set(modes.values()) == {"0o664"}, modes
