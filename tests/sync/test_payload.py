"""Payload validation and the snapshot of a replaced primary, end to end through the engine.

Runs over the local transport here and over the real sshd in tests/integration/test_sync_engine.py
(same functions, a `sides` fixture with an SshTransport). A junk, zero-filled or wrong-schema
records.parquet, overlay part or meta.md on one side never replaces the good copy on the other,
under every --verify mode; a valid records.parquet that replaces one no snapshot holds leaves a
snapshot of it on the receiving side.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from builders import add_event, make_dataset, snapshot_all, tree, write_records

from usrbatch.dataset.layout import SNAPSHOT_NAME
from usrbatch.errors import VerificationError
from usrbatch.sync import engine
from usrbatch.sync import payload as pl
from usrbatch.sync.options import SyncOptions
from usrbatch.transport.base import Transfer

DS = "densegen/demo"
PART = "_derived/densegen/part-bad.parquet"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _bad_bytes(what: str, good: bytes, tmp: Path, *, keyed: bool) -> bytes:
    """junk | zero-filled (same size as the good file) | wrong-schema (a valid parquet table)."""
    if what == "junk":
        return b"this is not parquet \x00\xff" * 64
    if what == "zero-filled":
        return b"\x00" * len(good)
    table = pa.table({"densegen__score": [0.5, 0.25]} if not keyed else {"x": [1, 2], "y": ["a", "b"]})
    path = tmp / "wrong.parquet"
    pq.write_table(table, path)
    return path.read_bytes()


def _plant(dataset: Path, target: str, what: str, tmp: Path) -> None:
    """Make `target` of `dataset` an invalid payload (a new overlay part when target is PART)."""
    if target == PART:
        good = next((dataset / "_derived" / "densegen").glob("part-*.parquet")).read_bytes()
        (dataset / PART).write_bytes(_bad_bytes(what, good, tmp, keyed=False))
        return
    path = dataset / target
    good = path.read_bytes()
    if target == "meta.md":
        bad = {"junk": "café".encode("latin-1") * 40, "zero-filled": b"\x00" * len(good)}[what]
    else:
        bad = _bad_bytes(what, good, tmp, keyed=True)
    path.write_bytes(bad)


CASES = [
    ("records.parquet", "junk"),
    ("records.parquet", "zero-filled"),
    ("records.parquet", "wrong-schema"),
    (PART, "junk"),
    (PART, "zero-filled"),
    (PART, "wrong-schema"),
    ("meta.md", "junk"),
    ("meta.md", "zero-filled"),
]
KIND = {"records.parquet": "records.parquet", PART: "overlay", "meta.md": "meta.md"}


@pytest.mark.parametrize(("target", "what"), CASES)
def test_pull_refuses_an_invalid_remote_payload_and_keeps_the_local_copy(sides, tmp_path, target, what):
    remote = make_dataset(sides.remote_root, DS)
    engine.pull(sides.local_root, DS, sides.transport)
    _plant(remote, target, what, tmp_path)
    before = _payload_state(sides.local_root)
    with pytest.raises(VerificationError) as err:
        engine.pull(sides.local_root, DS, sides.transport)
    msg = str(err.value)
    assert msg.startswith(f"post-pull-payload: remote {sides.transport.label}/{DS}/{target} is not a valid ")
    assert KIND[target] in msg and "Nothing was promoted: the local dataset is unchanged." in msg
    assert err.value.hint and "pull again" in err.value.hint
    assert _payload_state(sides.local_root) == before  # no staging dir, no snapshot, nothing promoted


@pytest.mark.parametrize(("target", "what"), CASES)
def test_push_refuses_an_invalid_local_payload_and_keeps_the_remote_copy(sides, tmp_path, target, what):
    local = make_dataset(sides.local_root, DS)
    engine.push(sides.local_root, DS, sides.transport)
    _plant(local, target, what, tmp_path)
    before = _payload_state(sides.remote_root)
    with pytest.raises(VerificationError) as err:
        engine.push(sides.local_root, DS, sides.transport)
    msg = str(err.value)
    assert msg.startswith(f"pre-push-payload: local {local}/{target} is not a valid ")
    assert "Nothing was uploaded: the remote dataset is unchanged." in msg
    assert err.value.hint and "push again" in err.value.hint
    assert _payload_state(sides.remote_root) == before


def _payload_state(root: Path) -> dict[str, tuple[str, int]]:
    """Every entry under root with content and mtime, but the lock files (a lock records its
    holder in them): proves that no file, staging dir, temp or snapshot appeared or changed."""
    return {
        rel: state
        for rel, state in snapshot_all(root).items()
        if Path(rel).name not in (".usr.lock", ".events.lock")
    }


@pytest.mark.parametrize(
    "opts",
    [
        SyncOptions(verify="hash"),
        SyncOptions(verify="size"),
        SyncOptions(verify="parquet"),
        SyncOptions(verify="auto"),
        SyncOptions(verify="size", sidecars=False, content_hashes=False),
        SyncOptions(verify="size", sidecars=False, content_hashes=False, primary_only=True),
    ],
    ids=["hash", "size", "parquet", "auto", "no-sidecars", "primary-only"],
)
def test_no_verify_mode_skips_the_payload_check(sides, tmp_path, opts):
    """A wrong-schema table has a footer, so even --verify parquet reads its shape; it is refused."""
    remote = make_dataset(sides.remote_root, DS)
    engine.pull(sides.local_root, DS, sides.transport)
    good = (sides.local_root / DS / "records.parquet").read_bytes()
    _plant(remote, "records.parquet", "wrong-schema", tmp_path)
    with pytest.raises(VerificationError, match=r"^post-pull-payload: .*lacks core column 'id'"):
        engine.pull(sides.local_root, DS, sides.transport, opts)
    assert (sides.local_root / DS / "records.parquet").read_bytes() == good
    (remote / "records.parquet").write_bytes(good)
    _plant(sides.local_root / DS, "records.parquet", "wrong-schema", tmp_path)
    with pytest.raises(VerificationError, match=r"^pre-push-payload: .*lacks core column 'id'"):
        engine.push(sides.local_root, DS, sides.transport, opts)
    assert (remote / "records.parquet").read_bytes() == good


def test_uploaded_temp_is_validated_inside_apply_before_any_rename(sides, tmp_path, monkeypatch):
    """Defence in depth: were the local check skipped, the agent's apply refuses the uploaded
    temp (`post-push-payload`), renames nothing and removes the uploads."""
    local = make_dataset(sides.local_root, DS)
    engine.push(sides.local_root, DS, sides.transport)
    before = tree(sides.remote_root / DS)
    _plant(local, "records.parquet", "zero-filled", tmp_path)
    monkeypatch.setattr(pl, "check_local", lambda *a, **k: None)
    with pytest.raises(VerificationError) as err:
        engine.push(sides.local_root, DS, sides.transport)
    msg = str(err.value)
    assert msg.startswith(f"post-push-payload: the uploaded copy of {DS}/records.parquet (remote temp ")
    assert "is not a complete parquet file: missing head magic PAR1" in msg
    assert "the remote dataset is unchanged" in msg and sides.transport.label in msg
    assert tree(sides.remote_root / DS) == before
    temps = [p for p in (sides.remote_root / DS).rglob(".usrbatch-tmp-*")]
    assert temps == []


def test_transport_apply_refuses_an_invalid_temp_and_removes_it(sides, tmp_path):
    make_dataset(sides.remote_root, DS)
    before = tree(sides.remote_root / DS)
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x00" * 4096)
    temp = f"{DS}/_derived/densegen/.usrbatch-tmp-x-part-new.parquet"
    sides.transport.upload([Transfer(temp, junk, 4096, _sha(junk.read_bytes()))])
    with pytest.raises(
        VerificationError, match=r"^post-push-payload: the uploaded copy of .*part-new\.parquet"
    ):
        sides.transport.apply(
            [(temp, f"{DS}/_derived/densegen/part-new.parquet")],
            [f"{DS}/meta.md"],
            verify={temp: _sha(junk.read_bytes())},
            payload={temp: "overlay"},
        )
    assert tree(sides.remote_root / DS) == before  # meta.md not removed either
    assert not (sides.remote_root / temp).exists()


def _snapshots(dataset: Path) -> dict[str, str]:
    snaps = dataset / "_snapshots"
    return {p.name: _sha(p.read_bytes()) for p in snaps.iterdir() if SNAPSHOT_NAME.match(p.name)}


def test_push_snapshots_a_replaced_remote_primary_no_snapshot_holds(sides):
    make_dataset(sides.local_root, DS)
    engine.push(sides.local_root, DS, sides.transport)
    remote = sides.remote_root / DS
    write_records(remote / "records.parquet", 5, tag="remote-only")  # rewritten there, no snapshot
    lost = _sha((remote / "records.parquet").read_bytes())
    before = _snapshots(remote)
    res = engine.push(sides.local_root, DS, sides.transport)
    assert res.transfer_state == "TRANSFERRED" and res.files_sent == 1
    new = {k: v for k, v in _snapshots(remote).items() if k not in before}
    assert list(new.values()) == [lost]
    name = next(iter(new))
    assert any(f"_snapshots/{name} on {sides.transport.label}" in n for n in res.notes)
    assert (remote / "records.parquet").read_bytes() == (
        sides.local_root / DS / "records.parquet"
    ).read_bytes()
    diff = engine.plan_diff(sides.local_root, DS, sides.transport)
    assert diff.summary.changes["snapshots_name_diff"]  # the kept copy shows until it is pulled
    engine.pull(sides.local_root, DS, sides.transport)
    assert tree(sides.local_root / DS) == tree(remote)


def test_pull_snapshots_a_replaced_local_primary_no_snapshot_holds(sides):
    make_dataset(sides.remote_root, DS)
    engine.pull(sides.local_root, DS, sides.transport)
    local = sides.local_root / DS
    write_records(local / "records.parquet", 4, tag="local-only")
    lost = _sha((local / "records.parquet").read_bytes())
    before = _snapshots(local)
    res = engine.pull(sides.local_root, DS, sides.transport)
    new = {k: v for k, v in _snapshots(local).items() if k not in before}
    assert list(new.values()) == [lost]
    assert any(f"is kept as _snapshots/{next(iter(new))}" in n for n in res.notes)
    assert (local / "records.parquet").read_bytes() == (
        sides.remote_root / DS / "records.parquet"
    ).read_bytes()


def test_a_replacement_whose_old_primary_is_snapshotted_adds_no_snapshot(sides):
    """The usual rewrite (the writer snapshots the old primary, as import does): sync adds no
    snapshot of its own, and both sides converge to up-to-date."""
    local = make_dataset(sides.local_root, DS)
    engine.push(sides.local_root, DS, sides.transport)
    old = (local / "records.parquet").read_bytes()
    (local / "_snapshots" / "records-20260105T000000123456.parquet").write_bytes(old)
    write_records(local / "records.parquet", 8, tag="b")
    add_event(local, "import_rows", rows=5)
    res = engine.push(sides.local_root, DS, sides.transport)
    assert not [n for n in res.notes if "is kept as" in n]
    assert tree(local) == tree(sides.remote_root / DS)
    assert engine.plan_diff(sides.local_root, DS, sides.transport).summary.has_change is False
