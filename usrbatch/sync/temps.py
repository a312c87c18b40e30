"""Temp files of a transfer, one policy for both modes (dataset and FILE).

* Names are by content: an upload goes to `.usrbatch-tmp-<sha256[:16]>-<name>` beside its target,
  a download to `.usrbatch-tmp-<name>-<sha256[:16]>.part` beside its target. A transfer cut off
  mid-file leaves its temp; the next transfer of the same bytes finds it and resumes from its
  size (the final sha256 decides), so a dropped push or pull costs only the missing tail.
* On a failure the temps are removed best effort (`cleanup_remote`): when the link is down that
  fails, the partial temps stay and the next run resumes them. A verification failure removes
  them (the bytes are wrong, not short).
* Leftovers for other bytes are removed by the next run that owns the place: a dataset push
  (under the remote lease) removes every temp it did not plan; a FILE pull drops older partials
  of its target.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from usrbatch.auditlog import get_logger
from usrbatch.files import TEMP_PREFIX
from usrbatch.transport.base import Transport

PARTIAL_SUFFIX = ".part"


def upload_temp(rel: str, sha256: str) -> str:
    """The remote temp of an upload of `rel` whose content hashes to `sha256` (same directory)."""
    p = PurePosixPath(rel)
    name = f"{TEMP_PREFIX}{sha256[:16]}-{p.name}"
    return name if str(p.parent) == "." else f"{p.parent}/{name}"


def download_partial(local: Path, sha256: str) -> Path:
    """The download temp beside `local`, named by the remote content so a retry resumes it."""
    return local.with_name(f"{TEMP_PREFIX}{local.name}-{sha256[:16]}{PARTIAL_SUFFIX}")


def drop_stale_partials(local: Path, keep: Path) -> None:
    """Download partials of `local` left by pulls of an older remote content."""
    prefix = f"{TEMP_PREFIX}{local.name}-"
    for entry in local.parent.glob(f"{TEMP_PREFIX}*{PARTIAL_SUFFIX}"):
        if entry != keep and entry.name.startswith(prefix) and entry.is_file() and not entry.is_symlink():
            entry.unlink(missing_ok=True)


def cleanup_remote(transport: Transport, paths: list[str]) -> None:
    """Best-effort removal of upload temps; a failure is logged, never raised over the original one."""
    if not paths:
        return
    try:
        transport.apply([], paths)
    except Exception as exc:  # cleanup must never hide the original failure
        get_logger().info("sync.cleanup_failed", error=str(exc), files=len(paths))
