"""Two inventories → SyncPlan + DiffSummary: content decides, public fields are kept."""

from __future__ import annotations

from usrbatch.sync.plan import build_plan
from usrbatch.transport.base import FileEntry, Inventory


def inv(
    files: dict[str, str], *, lines: int | None = None, mtimes: dict[str, int] | None = None
) -> Inventory:
    mt = mtimes or {}
    entries = {
        p: FileEntry(p, len(sha), mt.get(p, 1_767_225_600_000_000_000), sha) for p, sha in files.items()
    }
    return Inventory(exists=bool(files), files=entries, events_lines=lines)


BASE = {
    "records.parquet": "r1",
    "meta.md": "m1",
    ".events.log": "e1",
    "_snapshots/records-20260101T000000123456.parquet": "s1",
    "_derived/densegen/part-1.parquet": "d1",
    "_registry/x.yaml": "x1",
}


def plan(local, remote, direction="pull", **kw):
    return build_plan("ns/demo", local, remote, direction=direction, verify_mode="hash", **kw)


def test_identical_sides_plan_nothing():
    p = plan(inv(BASE, lines=2), inv(BASE, lines=2))
    assert (p.send, p.delete, p.summary.has_change) == ((), (), False)
    assert not any(v for k, v in p.summary.changes.items())


def test_same_name_rewrite_in_aux_is_sent():
    remote = dict(BASE, **{"_registry/x.yaml": "x2"})
    p = plan(inv(BASE, lines=2), inv(remote, lines=2))
    assert [e.path for e in p.send] == ["_registry/x.yaml"]
    ch = p.summary.changes
    assert ch["aux_files_diff"] and ch["aux_content_diff"] and not ch["derived_files_diff"]
    assert p.summary.has_change


def test_meta_mtime_alone_is_not_a_change_but_content_is():
    p = plan(inv(BASE, lines=2), inv(BASE, lines=2, mtimes={"meta.md": 5_000_000_000}))
    assert p.summary.changes["meta_mtime_diff"] is True
    assert p.summary.meta_remote_mtime == "5"
    assert not p.has_change
    p = plan(inv(BASE, lines=2), inv(dict(BASE, **{"meta.md": "m2"}), lines=2))
    assert p.summary.changes["meta_content_diff"] and [e.path for e in p.send] == ["meta.md"]


def test_pull_mirror_deletes_local_only_and_sends_events_last():
    local = dict(BASE, **{"_derived/infer/part-9.parquet": "i9"})
    remote = dict(
        BASE, **{".events.log": "e2", "_derived/densegen/part-2.parquet": "d2", "records.parquet": "r2"}
    )
    p = plan(inv(local, lines=2), inv(remote, lines=3))
    assert [e.path for e in p.send] == ["_derived/densegen/part-2.parquet", "records.parquet", ".events.log"]
    assert p.delete == ("_derived/infer/part-9.parquet",)
    s = p.summary
    assert s.derived_local_files == ["densegen/part-1.parquet", "infer/part-9.parquet"]
    assert s.derived_remote_files == ["densegen/part-1.parquet", "densegen/part-2.parquet"]
    assert s.changes["events_new_remote_lines"] == 1 and s.changes["events_content_diff"] is True
    assert s.changes["primary_sha_diff"] is True


def test_push_direction_sends_local_files():
    local = dict(BASE, **{"_derived/infer/part-9.parquet": "i9"})
    p = plan(inv(local, lines=2), inv(BASE, lines=2), direction="push")
    assert [e.path for e in p.send] == ["_derived/infer/part-9.parquet"]
    assert p.delete == ()


def test_snapshot_counts_and_newer_than_local():
    remote = dict(
        BASE, **{"_snapshots/records-20260301T000000123456.parquet": "s3", "_snapshots/notes.txt": "n"}
    )
    p = plan(inv(BASE, lines=2), inv(remote, lines=2))
    snap = p.summary.snapshots
    assert (snap.count, snap.newer_than_local, snap.newest_ts) == (2, 1, "20260301T000000123456")
    assert p.summary.changes["snapshots_name_diff"] is True
    assert {e.path for e in p.send} == {
        "_snapshots/records-20260301T000000123456.parquet",
        "_snapshots/notes.txt",
    }


def test_primary_only_and_skip_snapshots_scopes():
    remote = dict(BASE, **{"records.parquet": "r2", "_snapshots/records-20260301T000000123456.parquet": "s3"})
    p = plan(inv(BASE, lines=2), inv(remote, lines=2), primary_only=True)
    assert [e.path for e in p.send] == ["records.parquet"]
    assert "events_content_diff" not in p.summary.changes
    p = plan(inv(BASE, lines=2), inv(remote, lines=2), skip_snapshots=True)
    assert [e.path for e in p.send] == ["records.parquet"]
    assert p.summary.changes["snapshots_name_diff"] is False


def test_bootstrap_from_absent_side():
    p = plan(inv({}), inv(BASE, lines=2))
    assert len(p.send) == len(BASE)
    assert p.summary.primary_local.exists is False
    assert p.summary.changes["primary_sha_diff"] is True
