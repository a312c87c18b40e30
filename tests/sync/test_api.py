"""sync/api.py: one entry for diff / pull / push of a dataset and of one file, on both sides."""

from __future__ import annotations

import pytest
from builders import make_dataset, tree
from sides import FileSides, Sides

from usrbatch.errors import DatasetError, VerificationError
from usrbatch.remotes import RemoteConfig
from usrbatch.sync import api, filemode
from usrbatch.sync.options import SyncOptions


def _dataset_target(sides: Sides, ds: str) -> api.DatasetTarget:
    remote = getattr(sides.transport, "remote", None) or RemoteConfig(
        name="hpc", type="local", base_dir=str(sides.remote_root)
    )
    return api.DatasetTarget(sides.local_root, ds, remote)


def test_dataset_push_diff_pull_through_the_one_entry(sides: Sides) -> None:
    ds = "densegen/demo"
    make_dataset(sides.local_root, ds)
    target = _dataset_target(sides, ds)
    seen = []
    hooks = api.SyncHooks(on_plan=seen.append)
    pushed = api.run("push", target, sides.transport, SyncOptions(), hooks)
    assert pushed.action == "push" and pushed.files_sent > 0 and pushed.transfer_state == "TRANSFERRED"
    assert len(seen) == 1 and seen[0].has_change
    assert tree(sides.local_root / ds) == tree(sides.remote_root / ds)
    diff = api.run("diff", target, sides.transport, SyncOptions(sidecars=False, content_hashes=False))
    assert diff.action == "diff" and not diff.summary.has_change
    pulled = api.run("pull", target, sides.transport, SyncOptions())
    assert pulled.transfer_state == "NO-OP" and pulled.files_sent == 0


def test_file_push_diff_pull_through_the_one_entry(fm: FileSides) -> None:
    local = fm.local_repo / "notes" / "a.txt"
    local.parent.mkdir(parents=True)
    local.write_text("version A\n")
    target = filemode.resolve_file_target(str(local), fm.remote)
    pushed = api.run_opened("push", target, fm.open, SyncOptions())
    assert pushed.files_sent == 1 and (fm.remote_repo / "notes" / "a.txt").read_text() == "version A\n"
    diff = api.run_opened("diff", target, fm.open, SyncOptions())
    assert not diff.summary.has_change
    (fm.remote_repo / "notes" / "a.txt").write_text("version B\n")
    pulled = api.run_opened("pull", target, fm.open, SyncOptions())
    assert pulled.files_sent == 1 and local.read_text() == "version B\n"


def test_run_opened_closes_the_transport_when_the_sync_fails(sides: Sides) -> None:
    closed = []

    class Recording:
        def __init__(self, inner) -> None:
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def close(self) -> None:
            closed.append(True)

    target = _dataset_target(sides, "densegen/absent")
    with pytest.raises(DatasetError, match="local records.parquet is missing"):
        api.run_opened("push", target, lambda _config: Recording(sides.transport), SyncOptions())
    assert closed == [True]


def test_dataset_only_flags_are_refused_for_a_file_with_their_words() -> None:
    api.refuse_dataset_only_flags([])
    with pytest.raises(
        VerificationError, match=r"^--primary-only is a dataset-only flag \(not valid in FILE mode\)\.$"
    ):
        api.refuse_dataset_only_flags(["--primary-only"])
