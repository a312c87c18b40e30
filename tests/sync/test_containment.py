"""Nothing is written outside a remote's base_dir, and a failed push leaves no temp behind.

Runs over the local transport here and over the real sshd in tests/integration/test_sync_engine.py
(same functions): both remotes refuse a dataset path that leads out of base_dir through a
symlink before writing anything, and both say plainly when base_dir itself is missing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from builders import make_dataset, snapshot_all, tree, write_records

from usrbatch.errors import TransferError, VerificationError
from usrbatch.sync import engine

DS = "densegen/demo"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory beside base_dir that a hostile or careless symlink points at."""
    path = tmp_path / "outside"
    (path / "demo").mkdir(parents=True)
    (path / "demo" / "keep.txt").write_text("not a dataset\n")
    return path


def _temps(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(".usrbatch-tmp-")] if root.exists() else []


def test_push_through_a_symlinked_namespace_out_of_base_dir_writes_nothing_outside(sides, outside):
    make_dataset(sides.local_root, DS)
    os.symlink(outside, sides.remote_root / "densegen")
    before = snapshot_all(outside)
    with pytest.raises(TransferError, match=r"escapes base_dir through a symlink"):
        engine.push(sides.local_root, DS, sides.transport)
    assert snapshot_all(outside) == before  # no dataset dir, lock, lease marker or temp out there
    with pytest.raises(TransferError, match=r"escapes base_dir through a symlink"):
        engine.pull(sides.local_root, DS, sides.transport)
    with pytest.raises(TransferError, match=r"escapes base_dir through a symlink"):
        engine.plan_diff(sides.local_root, DS, sides.transport)
    assert snapshot_all(outside) == before


def test_a_symlinked_dataset_dir_out_of_base_dir_is_refused(sides, outside):
    make_dataset(sides.local_root, DS)
    (sides.remote_root / "densegen").mkdir()
    os.symlink(outside / "demo", sides.remote_root / DS)
    before = snapshot_all(outside)
    with pytest.raises(TransferError, match=r"unsupported entry \(not-a-directory\)"):
        engine.push(sides.local_root, DS, sides.transport)
    with (
        pytest.raises(TransferError, match=r"escapes base_dir through a symlink"),
        sides.transport.lease(DS, timeout=1),
    ):
        pass
    assert snapshot_all(outside) == before


def test_missing_base_dir_is_named_with_the_fix_not_called_an_escape(sides):
    make_dataset(sides.local_root, DS)
    base = sides.remote_root
    os.rename(base, base.with_name(base.name + " moved"))
    try:
        with pytest.raises(TransferError) as err:
            engine.push(sides.local_root, DS, sides.transport)
        msg = str(err.value)
        assert f"base_dir {base} does not exist; create it (mkdir -p '{base}')" in msg
        assert "escapes" not in msg
        assert not base.exists()  # nothing created on the way
    finally:
        os.rename(base.with_name(base.name + " moved"), base)
    res = engine.push(sides.local_root, DS, sides.transport)  # once it exists, the push works
    assert res.transfer_state == "TRANSFERRED"


def test_a_failed_upload_leaves_no_temp_on_the_remote(sides):
    """The local file changes while it is uploaded: the sha256 check fails, the push is refused,
    the remote keeps its copy and no upload temp is left behind."""
    local = make_dataset(sides.local_root, DS)
    engine.push(sides.local_root, DS, sides.transport)
    write_records(local / "records.parquet", 50, tag="new")
    remote_before = tree(sides.remote_root / DS)
    changed = []

    def progress(total: int):
        def step(path: str, n: int) -> None:
            if not changed:
                write_records(local / "records.parquet", 60, tag="changed-under-us")
                changed.append(path)

        return step

    with pytest.raises(VerificationError):
        engine.push(sides.local_root, DS, sides.transport, progress=progress)
    assert changed
    assert tree(sides.remote_root / DS) == remote_before
    assert _temps(sides.remote_root) == []
