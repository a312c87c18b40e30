"""Payload validation and the snapshot of a replaced primary: what a sync may put in place.

A sha256 proves that the bytes arrived, not that they are a dataset. So before anything is
replaced, every transferred file of a checked kind is validated with the agent's stdlib footer
reader (`agent.payload_problem`, the same code on both sides, no pyarrow needed remotely):
`records.parquet` is a complete parquet file with the core schema, `_derived/**.parquet` overlays
are complete with an `id`/`sequence` key column, `_snapshots/records-*.parquet` are complete
parquet files, `meta.md` is UTF-8 text. The checks run on pull over the staged files before
promotion (`post-pull-payload`), on push over the local files before upload (`pre-push-payload`)
and, inside the agent's `apply`, over the uploaded temps before any rename (`post-push-payload`).
FILE mode checks a single `records.parquet`, `meta.md` or `*.parquet` (complete) the same way.
No `--verify` mode skips them and there is no opt-out.

A `records.parquet` that a transfer replaces is first copied to `_snapshots/` on the receiving
side (named as the public tool names snapshots; sync prunes nothing), unless the transfer leaves
a snapshot with the same content there already (the usual case: the sender's rewrite snapshotted
it), so a diverged or unwanted primary can be restored. That snapshot exists on one side only:
the next transfer the other way carries it over, the next one the same way mirrors it away.
"""

from __future__ import annotations

import dataclasses
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from usrbatch.agent import remote as agent
from usrbatch.auditlog import get_logger
from usrbatch.dataset.layout import RECORDS, SNAPSHOT_NAME, SNAPSHOTS_DIR
from usrbatch.errors import VerificationError
from usrbatch.transport.base import FileEntry, Inventory

PULL_CONTEXT = "post-pull-payload"
PUSH_CONTEXT = "pre-push-payload"
REMOTE_CONTEXT = "post-push-payload"  # the agent's apply (agent.PayloadInvalid)


@dataclass(frozen=True)
class PayloadProblem:
    """One file that may not replace anything: its path in the dataset, kind and defect."""

    path: str  # relative to the dataset dir
    kind: str  # agent.PAYLOAD_KINDS
    problem: str  # completes "it ..." (e.g. "is not a complete parquet file: missing head magic PAR1")


def payload_kinds(paths: Iterable[str]) -> dict[str, str]:
    """{path: kind} for the paths (relative to a dataset dir) that are validated."""
    out = {}
    for rel in paths:
        kind = agent.payload_kind(rel)
        if kind is not None:
            out[rel] = kind
    return out


def find_problems(directory: Path, paths: Iterable[str]) -> list[PayloadProblem]:
    """The invalid files among `paths` under `directory`, sorted by path (footers only read)."""
    found = []
    for rel, kind in sorted(payload_kinds(paths).items()):
        problem = agent.payload_problem(str(Path(directory) / rel), kind)
        if problem is not None:
            found.append(PayloadProblem(rel, kind, problem))
    return found


def _file_problems(path: Path, name: str) -> list[PayloadProblem]:
    """FILE mode: `path` (possibly a temp) checked as the file `name` (agent.file_payload_kind)."""
    kind = agent.file_payload_kind(name)
    problem = agent.payload_problem(str(path), kind) if kind else None
    return [PayloadProblem(name, kind, problem)] if kind and problem else []


_PULL_FIX = {
    "records": "Restore the remote records.parquet (its _snapshots/ hold earlier copies) or push a good "
    "local copy, then pull again.",
    "overlay": "Rewrite or remove the overlay on the remote, then pull again.",
    "snapshot": "Remove the damaged snapshot on the remote, then pull again.",
    "meta": "Rewrite meta.md on the remote as UTF-8 text, then pull again.",
    "parquet": "Replace the remote file with a complete parquet file, then pull again.",
}
_PUSH_FIX = {
    "records": "Restore it from {dir}/_snapshots/ (newest records-*.parquet) or pull the remote copy, "
    "then push again.",
    "overlay": "Rewrite or remove the overlay, then push again (`usr validate` lists overlay problems).",
    "snapshot": "Remove the damaged snapshot, then push again.",
    "meta": "Rewrite meta.md as UTF-8 text, then push again.",
    "parquet": "Rewrite it as a complete parquet file, then push again.",
}


def _refuse(
    context: str,
    ds: str,
    problems: list[PayloadProblem],
    where: str,
    outcome: str,
    fixes: dict[str, str],
) -> None:
    """Raise VerificationError `<context>: <where>/<path> is not a valid <kind>: it <problem>.`
    (+ the outcome and the kind's fix as hint) when `problems` is not empty."""
    if not problems:
        return
    first = problems[0]
    more = ""
    if len(problems) > 1:
        more = f" ({len(problems) - 1} more invalid: {', '.join(p.path for p in problems[1:4])})"
    for p in problems:
        get_logger().info(
            "sync.payload.refused", dataset=ds, context=context, path=p.path, kind=p.kind, problem=p.problem
        )
    raise VerificationError(
        f"{context}: {where}/{first.path} is not a valid {agent.KIND_TEXT[first.kind]}: it "
        f"{first.problem}.{more} {outcome}",
        hint=fixes[first.kind],
    )


def check_staged(ds: str, staging: Path, sent: Sequence[FileEntry], remote_label: str) -> None:
    """Pull: refuse (`post-pull-payload`) when a staged file is not a valid payload, before promotion."""
    problems = find_problems(staging, [e.path for e in sent])
    outcome = "Nothing was promoted: the local dataset is unchanged."
    _refuse(PULL_CONTEXT, ds, problems, f"remote {remote_label}/{ds}", outcome, _PULL_FIX)


def check_local(ds: str, local_dir: Path, sent: Sequence[FileEntry]) -> None:
    """Push: refuse (`pre-push-payload`) when a local file to send is not a valid payload."""
    problems = find_problems(local_dir, [e.path for e in sent])
    outcome = "Nothing was uploaded: the remote dataset is unchanged."
    fixes = {kind: fix.format(dir=local_dir) for kind, fix in _PUSH_FIX.items()}
    _refuse(PUSH_CONTEXT, ds, problems, f"local {local_dir}", outcome, fixes)


def check_file_staged(partial: Path, name: str, remote_where: str) -> None:
    """FILE-mode pull: refuse (`post-pull-payload`) a downloaded `partial` that is not a valid
    `name` (records.parquet, meta.md, any .parquet), before it replaces the local file."""
    where = posixpath.dirname(remote_where) or "."
    outcome = "The local file is unchanged."
    _refuse(PULL_CONTEXT, name, _file_problems(partial, name), f"remote {where}", outcome, _PULL_FIX)


def check_file_local(path: Path) -> None:
    """FILE-mode push: refuse (`pre-push-payload`) a local file that is not a valid payload."""
    fixes = {kind: fix.format(dir=path.parent) for kind, fix in _PUSH_FIX.items()}
    outcome = "Nothing was uploaded: the remote file is unchanged."
    _refuse(PUSH_CONTEXT, path.name, _file_problems(path, path.name), f"local {path.parent}", outcome, fixes)


def upload_kinds(temps: Mapping[str, str]) -> dict[str, str]:
    """{remote temp path: kind} for the agent's apply, from {dataset path: remote temp path}."""
    return {temps[rel]: kind for rel, kind in payload_kinds(temps).items()}


# -- the snapshot of a replaced primary -------------------------------------------------------


def replaces_unsaved_primary(receiver: Inventory, sent: Sequence[FileEntry], deleted: Iterable[str]) -> bool:
    """True when the transfer replaces the receiver's records.parquet and leaves no
    `_snapshots/records-*.parquet` with its content on the receiver."""
    old = receiver.files.get(RECORDS)
    new = next((e for e in sent if e.path == RECORDS), None)
    if old is None or new is None or (old.sha256 is not None and old.sha256 == new.sha256):
        return False
    if old.sha256 is None:
        return True  # cannot tell whether a snapshot holds it: keep one
    gone = set(deleted)
    after = {rel: e.sha256 for rel, e in receiver.files.items() if rel not in gone}
    after.update({e.path: e.sha256 for e in sent})
    return not any(sha == old.sha256 and _is_snapshot(rel) for rel, sha in after.items())


def _is_snapshot(rel: str) -> bool:
    head, _, name = rel.partition("/")
    return head == SNAPSHOTS_DIR and SNAPSHOT_NAME.match(name) is not None


def snapshot_name(taken: Iterable[str]) -> str:
    """A new snapshot file name, as the public tool (and record_rewrite.snapshot_records) names them:
    `records-<%Y%m%dT%H%M%S%f UTC>.parquet`, not among `taken` (names in `_snapshots/`)."""
    from usrbatch.dataset import schema as S  # pyarrow: loaded only when a primary is replaced

    taken = set(taken)
    while True:
        name = f"records-{S.utc_now().strftime('%Y%m%dT%H%M%S%f')}.parquet"
        if name not in taken:
            return name


def keep_replaced_local(
    ds: str, local_dir: Path, local: Inventory, sent: Sequence[FileEntry], deleted: Iterable[str]
) -> str | None:
    """Pull, under the local locks and before promotion: snapshot the local records.parquet the
    staged one replaces (see replaces_unsaved_primary). Returns the snapshot's path in the dataset or None."""
    if not replaces_unsaved_primary(local, sent, deleted):
        return None
    from usrbatch.dataset.record_rewrite import snapshot_records  # pyarrow: only when a primary is replaced

    made = snapshot_records(local_dir, keep=None)
    rel = f"{SNAPSHOTS_DIR}/{made.name}"
    get_logger().info("sync.snapshot", dataset=ds, side="local", path=rel, reason="replaced by pull")
    return rel


def remote_snapshot_plan(
    ds: str, remote: Inventory, sent: Sequence[FileEntry], deleted: Iterable[str]
) -> tuple[str, str] | None:
    """Push: (source, snapshot) paths relative to base_dir for the agent's apply when the remote
    records.parquet is replaced unsaved (see replaces_unsaved_primary), else None."""
    if not replaces_unsaved_primary(remote, sent, deleted):
        return None
    names = [rel.partition("/")[2] for rel in remote.files if _is_snapshot(rel)]
    return f"{ds}/{RECORDS}", f"{ds}/{SNAPSHOTS_DIR}/{snapshot_name(names)}"


def set_aside_snapshot(
    ds: str, after: Inventory, planned: tuple[str, str], replaced_sha: str | None
) -> tuple[Inventory, str]:
    """Push, after apply: the post-apply inventory without the snapshot the agent made (so it is
    compared with the local side as before), after checking that it holds the replaced bytes.
    Returns (inventory, snapshot path in the dataset)."""
    rel = planned[1][len(ds) + 1 :]
    entry = after.files.get(rel)
    if entry is None or (replaced_sha and entry.sha256 != replaced_sha):
        raise VerificationError(
            f"post-push: the snapshot {rel} of the replaced remote records.parquet is "
            f"{'missing' if entry is None else 'not a copy of it'} after apply.",
            hint="Inspect the remote _snapshots/ before the next push.",
        )
    get_logger().info("sync.snapshot", dataset=ds, side="remote", path=rel, reason="replaced by push")
    files = {k: v for k, v in after.files.items() if k != rel}
    return dataclasses.replace(after, files=files), rel
