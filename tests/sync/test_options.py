"""The flag policy of §3.5 (exit-2 UsrErrors with the public texts)."""

from __future__ import annotations

import pytest

from usrbatch.errors import UsrError, VerificationError
from usrbatch.sync.options import SyncOptions, resolve_flag_policy


def policy(**flags):
    base = dict(
        verify_sidecars=False,
        no_verify_sidecars=False,
        verify_derived_hashes=False,
        no_verify_derived_hashes=False,
    )
    base.update(flags)
    return resolve_flag_policy(**base)


def test_defaults_and_opt_outs():
    assert policy() == (True, True)
    assert policy(verify_sidecars=True, verify_derived_hashes=True) == (True, True)
    assert policy(no_verify_sidecars=True) == (False, False)
    assert policy(no_verify_derived_hashes=True) == (True, False)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            {"verify_sidecars": True, "no_verify_sidecars": True},
            "Cannot combine --verify-sidecars and --no-verify-sidecars.",
        ),
        (
            {"verify_derived_hashes": True, "no_verify_derived_hashes": True},
            "Cannot combine --verify-derived-hashes and --no-verify-derived-hashes.",
        ),
        (
            {"verify_derived_hashes": True, "no_verify_sidecars": True},
            "--verify-derived-hashes requires sidecar verification.",
        ),
    ],
)
def test_conflicts(flags, message):
    with pytest.raises(VerificationError) as info:
        policy(**flags)
    assert str(info.value) == message
    assert isinstance(info.value, UsrError) and info.value.exit_code == 2


def test_library_guard():
    SyncOptions().validate()
    SyncOptions(primary_only=True, sidecars=False, content_hashes=False).validate()
    with pytest.raises(
        VerificationError,
        match=r"^--verify-sidecars requires full dataset transfer \(no --primary-only/--skip-snapshots\)\.$",
    ):
        SyncOptions(skip_snapshots=True).validate()
    with pytest.raises(VerificationError, match="requires sidecar verification"):
        SyncOptions(sidecars=False).validate()
