"""Sync options and the flag policy of §3.5 (sidecars and content hashes on by default)."""

from __future__ import annotations

from dataclasses import dataclass

from usrbatch.errors import VerificationError
from usrbatch.sync.verify import VERIFY_MODES


@dataclass(frozen=True)
class SyncOptions:
    """How a diff, pull or push runs. Defaults are the CLI defaults: hash + sidecars + hashes."""

    verify: str = "hash"
    sidecars: bool = True
    content_hashes: bool = True
    primary_only: bool = False
    skip_snapshots: bool = False
    dry_run: bool = False
    lock_timeout: float = 300.0

    @property
    def full(self) -> bool:
        return not self.primary_only

    def validate(self) -> None:
        """Library compatibility guard; raises VerificationError with the public messages."""
        if self.verify not in VERIFY_MODES:
            raise VerificationError(f"Unsupported verify mode '{self.verify}'.")
        if self.content_hashes and not self.sidecars:
            raise VerificationError("--verify-derived-hashes requires sidecar verification.")
        if self.sidecars and (self.primary_only or self.skip_snapshots):
            raise VerificationError(
                "--verify-sidecars requires full dataset transfer (no --primary-only/--skip-snapshots)."
            )
        if self.lock_timeout < 0:
            raise VerificationError("--lock-timeout must be >= 0 seconds.")


def resolve_flag_policy(
    *,
    verify_sidecars: bool,
    no_verify_sidecars: bool,
    verify_derived_hashes: bool,
    no_verify_derived_hashes: bool,
) -> tuple[bool, bool]:
    """CLI flags → (sidecars, content_hashes) per §3.5; conflicts raise VerificationError."""
    if verify_sidecars and no_verify_sidecars:
        raise VerificationError("Cannot combine --verify-sidecars and --no-verify-sidecars.")
    if verify_derived_hashes and no_verify_derived_hashes:
        raise VerificationError("Cannot combine --verify-derived-hashes and --no-verify-derived-hashes.")
    sidecars = not no_verify_sidecars
    if verify_derived_hashes and not sidecars:
        raise VerificationError("--verify-derived-hashes requires sidecar verification.")
    hashes = sidecars and not no_verify_derived_hashes
    return sidecars, hashes
