"""The options of `usr diff|status|pull|push` as click declares them, and `SyncFlags`, the same
flags typed, with the public contract's checks (dataset-only flags, the §3.5 verification policy)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import click

from usrbatch.sync.options import resolve_flag_policy
from usrbatch.sync.verify import VERIFY_MODES

DATASET_ONLY_FLAGS = (
    ("primary_only", "--primary-only"),
    ("skip_snapshots", "--skip-snapshots"),
    ("verify_sidecars", "--verify-sidecars"),
    ("no_verify_sidecars", "--no-verify-sidecars"),
    ("verify_derived_hashes", "--verify-derived-hashes"),
    ("no_verify_derived_hashes", "--no-verify-derived-hashes"),
)


verify_option = click.option(
    "--verify",
    type=click.Choice(VERIFY_MODES),
    default="hash",
    show_default=True,
    help="How records.parquet (or the one file in FILE mode) is verified: hash (sha256), size, "
    "parquet (rows/cols), auto.",
)
common_ignored = [
    click.option("--primary-only", is_flag=True, help="Only records.parquet."),
    click.option("--skip-snapshots", is_flag=True, help="Leave _snapshots/ alone."),
    click.option("--dry-run", is_flag=True, help="Plan and report; change nothing anywhere."),
    click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation."),
]


def with_options(options: list) -> Callable[[Callable], Callable]:
    """Apply a shared list of click options (in their listed order)."""

    def decorate(fn: Callable) -> Callable:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate


@dataclass(frozen=True)
class SyncFlags:
    """The sync commands' flags, typed (click hands them over as keyword arguments)."""

    verify: str = "hash"
    dry_run: bool = False
    yes: bool = False
    primary_only: bool = False
    skip_snapshots: bool = False
    verify_sidecars: bool = False
    no_verify_sidecars: bool = False
    verify_derived_hashes: bool = False
    no_verify_derived_hashes: bool = False
    lock_timeout: float = 300.0
    audit_json_out: str | None = None
    repo_root: str | None = None
    remote_path: str | None = None
    strict_bootstrap_id: bool = False

    @classmethod
    def of(cls, values: dict[str, Any]) -> SyncFlags:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    def dataset_only_given(self) -> list[str]:
        return [flag for key, flag in DATASET_ONLY_FLAGS if getattr(self, key)]

    def policy(self) -> tuple[bool, bool]:
        """(sidecars, content_hashes) per §3.5; conflicting flags raise VerificationError."""
        return resolve_flag_policy(
            verify_sidecars=self.verify_sidecars,
            no_verify_sidecars=self.no_verify_sidecars,
            verify_derived_hashes=self.verify_derived_hashes,
            no_verify_derived_hashes=self.no_verify_derived_hashes,
        )


file_options = [
    click.option(
        "--repo-root",
        type=click.Path(file_okay=False),
        default=None,
        help="FILE mode: local repo root the file's remote path is computed from "
        "(default: remote local_repo_root, then $DNADESIGN_REPO_ROOT).",
    ),
    click.option(
        "--remote-path",
        metavar="PATH",
        default=None,
        help="FILE mode: the remote file's path (absolute, or relative to remote repo_root).",
    ),
]


transfer_options = [
    verify_option,
    click.option("--verify-sidecars", is_flag=True, help="Verify sidecars after transfer (default: on)."),
    click.option("--no-verify-sidecars", is_flag=True, help="Skip sidecar and content-hash verification."),
    click.option(
        "--verify-derived-hashes",
        is_flag=True,
        help="Verify _derived/_auxiliary content hashes (default: on).",
    ),
    click.option("--no-verify-derived-hashes", is_flag=True, help="Skip content-hash verification only."),
    *common_ignored,
    click.option(
        "--audit-json-out", type=click.Path(dir_okay=False), default=None, help="Write the audit JSON here."
    ),
    click.option(
        "--lock-timeout",
        type=click.FloatRange(min=0),
        default=300.0,
        show_default=True,
        help="Seconds to wait for the local dataset lock and the remote lease.",
    ),
]
