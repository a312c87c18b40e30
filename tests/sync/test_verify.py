"""Verify-mode resolution, primary checks and sidecar messages (§3) — exact public texts."""

from __future__ import annotations

import pytest

from usrbatch.errors import VerificationError
from usrbatch.sync.plan import PrimaryStat
from usrbatch.sync.verify import SidecarState, check_sidecars, resolve_verify_mode, verify_primary

FULL = PrimaryStat(True, 10, "aa", 3, 4, "1")


def test_resolve_modes():
    assert resolve_verify_mode("hash", FULL) == ("hash", [])
    assert resolve_verify_mode("auto", FULL) == ("hash", [])
    assert resolve_verify_mode("auto", PrimaryStat(False)) == ("hash", [])
    assert resolve_verify_mode("parquet", PrimaryStat(False)) == ("parquet", [])
    assert resolve_verify_mode("auto", PrimaryStat(True, 10, None)) == (
        "size",
        ["Falling back from hash to size because remote sha256 is unavailable."],
    )
    assert resolve_verify_mode("auto", PrimaryStat(True, None, None, 3, 4)) == (
        "parquet",
        ["Falling back from hash/size to parquet because remote size is unavailable."],
    )


@pytest.mark.parametrize(
    ("mode", "stat", "message"),
    [
        ("hash", PrimaryStat(True, 10, None), "verify=hash requires remote sha256 (sha256sum/shasum)."),
        ("size", PrimaryStat(True, None, "aa"), "verify=size requires remote file size."),
        ("parquet", PrimaryStat(True, 10, "aa"), "verify=parquet requires remote parquet row/col stats."),
        ("auto", PrimaryStat(True), "No available verification method for remote file."),
        ("blake", FULL, "Unsupported verify mode 'blake'."),
    ],
)
def test_resolve_errors(mode, stat, message):
    with pytest.raises(VerificationError) as info:
        resolve_verify_mode(mode, stat)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("mode", "local", "remote", "message"),
    [
        ("hash", PrimaryStat(False), FULL, "post-pull: missing file on one side (local=False, remote=True)."),
        ("hash", PrimaryStat(True, 10, "bb"), FULL, "post-pull: SHA mismatch local=bb remote=aa"),
        ("hash", PrimaryStat(True, 10, None), FULL, "post-pull: verify=hash requires sha256 on both sides."),
        ("size", PrimaryStat(True, 11, "aa"), FULL, "post-pull: size mismatch local=11 remote=10"),
        ("parquet", PrimaryStat(True, 10, "aa", 5, 4), FULL, "post-pull: row mismatch local=5 remote=3"),
        ("parquet", PrimaryStat(True, 10, "aa", 3, 9), FULL, "post-pull: col mismatch local=9 remote=4"),
        (
            "parquet",
            PrimaryStat(True, 10, "aa"),
            FULL,
            "post-pull: verify=parquet requires row/col stats on both sides.",
        ),
        ("nope", FULL, FULL, "post-pull: unsupported verify mode 'nope'."),
    ],
)
def test_verify_primary_messages(mode, local, remote, message):
    with pytest.raises(VerificationError) as info:
        verify_primary("post-pull", mode, local, remote)
    assert str(info.value) == message


def test_verify_primary_passes():
    verify_primary("post-push", "hash", FULL, FULL)
    verify_primary("post-push", "size", PrimaryStat(True, 10, "zz"), FULL)
    verify_primary("post-push", "parquet", PrimaryStat(True, 99, "zz", 3, 4), FULL)


def state(**kw) -> SidecarState:
    base = dict(
        meta_sha256="m",
        meta_mtime="1",
        events_lines=2,
        snapshot_names=["records-20260101T000000123456.parquet"],
        snapshot_hashes=[("_snapshots/records-20260101T000000123456.parquet", "s")],
        derived_files=["a/part-1.parquet"],
        derived_hashes=[("a/part-1.parquet", "d")],
        aux_files=["_registry/x.yaml"],
        aux_hashes=[("_registry/x.yaml", "x")],
    )
    base.update(kw)
    return SidecarState(**base)


def test_sidecar_message_order_and_format():
    remote = state(
        events_lines=3,
        derived_files=["a/part-1.parquet", "a/part-2.parquet"],
        derived_hashes=[("a/part-1.parquet", "d"), ("a/part-2.parquet", "e")],
        aux_hashes=[("_registry/x.yaml", "y")],
    )
    with pytest.raises(VerificationError) as info:
        check_sidecars("post-pull-sidecars", state(), remote, content_hashes=True)
    assert str(info.value) == (
        "post-pull-sidecars: sidecar mismatch; .events.log lines local=2 remote=3; "
        "_derived files local=['a/part-1.parquet'] remote=['a/part-1.parquet', 'a/part-2.parquet']; "
        "_derived hashes local=[] remote=[('a/part-2.parquet', 'e')]; "
        "auxiliary hashes local=[('_registry/x.yaml', 'x')] remote=[('_registry/x.yaml', 'y')]"
    )


def test_sidecar_hashes_ignored_when_off_and_equal_passes():
    check_sidecars(
        "post-push-sidecars", state(), state(aux_hashes=[("_registry/x.yaml", "other")]), content_hashes=False
    )
    check_sidecars("post-push-sidecars", state(), state(), content_hashes=True)
    with pytest.raises(
        VerificationError, match=r"^post-push-sidecars: sidecar mismatch; meta.md sha256 local=m remote=-$"
    ):
        check_sidecars("post-push-sidecars", state(), state(meta_sha256=None), content_hashes=True)
