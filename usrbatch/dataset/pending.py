"""A pending pull promotion is a dataset state: found from the journal a pull writes beside its
staging dir, refused by every local mutation, reported by `validate`.

A pull killed inside its promotion leaves some files promoted and the rest staged. Until the next
pull or push completes it, a local write would be overwritten (or would make the roll-forward
refuse), so mutations stop here with the way out. The data plane calls `refuse_if_pending` at its
entry points (under the dataset lock); this module imports nothing from usrbatch.sync.
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from usrbatch.dataset.layout import JOURNAL_SUFFIX, STAGING_PREFIX
from usrbatch.errors import DatasetError

# mkdtemp's random suffix alphabet: a journal name ends `-<this>.promotion.json`, so the journal
# of dataset `demo` is never taken for one of `demo-x`.
_SUFFIX_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")


@dataclass(frozen=True)
class PendingPromotion:
    """One interrupted promotion into a dataset dir."""

    journal: Path
    staging: Path
    dataset_id: str
    remote: str  # the transport label the pull came from ("" when the journal does not say)


def staging_prefix(dataset_id: str) -> str:
    """Name prefix of a dataset's staging dirs (and their journals) at the datasets root."""
    return f"{STAGING_PREFIX}{dataset_id.replace('/', '__')}-"


def journal_for(staging: Path) -> Path:
    """The journal of a staging dir: beside it, never inside it."""
    return staging.with_name(staging.name + JOURNAL_SUFFIX)


def journals_at(root: Path, dataset_id: str) -> list[Path]:
    """Journal files at a datasets root named for `dataset_id` (content not checked)."""
    prefix = staging_prefix(dataset_id)
    try:
        names = os.listdir(root)
    except OSError:
        return []
    out = []
    for name in names:
        if not (name.startswith(prefix) and name.endswith(JOURNAL_SUFFIX)):
            continue
        middle = name[len(prefix) : -len(JOURNAL_SUFFIX)]
        if middle and set(middle) <= _SUFFIX_CHARS:
            out.append(Path(root) / name)
    return sorted(out)


def same_dir(a: Path, b: Path) -> bool:
    """Whether two paths name the same directory (as written, or the same inode)."""
    if Path(os.path.abspath(a)) == Path(os.path.abspath(b)):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _read_head(journal: Path) -> dict | None:
    try:
        with open(journal, encoding="utf-8") as fh:
            body = json.load(fh)
    except (OSError, ValueError):
        return None
    return body if isinstance(body, dict) else None


def promotions_at(root: Path, dataset_id: str, dataset_dir: Path) -> list[PendingPromotion]:
    """Pending promotions into `dataset_dir` whose journals sit at `root`. A journal that cannot
    be read counts as pending (fail closed: the sync engine then reports what is wrong with it)."""
    found = []
    for journal in journals_at(root, dataset_id):
        head = _read_head(journal)
        target = head.get("dataset_dir") if head else None
        if head is not None and not (isinstance(target, str) and same_dir(Path(target), dataset_dir)):
            continue
        remote = head.get("remote") if head else ""
        found.append(
            PendingPromotion(
                journal=journal,
                staging=journal.with_name(journal.name[: -len(JOURNAL_SUFFIX)]),
                dataset_id=dataset_id,
                remote=remote if isinstance(remote, str) else "",
            )
        )
    return found


def pending_promotions(dataset_dir: Path | str) -> list[PendingPromotion]:
    """Pending promotions into a dataset dir, looked up at both roots it can belong to
    (`<root>/<name>` and `<root>/<namespace>/<name>`)."""
    directory = Path(os.path.abspath(dataset_dir))
    found = []
    for up in (1, 2):
        if len(directory.parents) < up:
            break
        root = directory.parents[up - 1]
        dataset_id = directory.relative_to(root).as_posix()
        found.extend(promotions_at(root, dataset_id, directory))
    return found


def finish_hint(pending: PendingPromotion) -> str:
    """How to finish (or abandon) a pending promotion, with the exact paths."""
    where = f" (the remote at {pending.remote})" if pending.remote else ""
    paths = " ".join(shlex.quote(str(p)) for p in (pending.staging, pending.journal))
    return (
        f"Run `usr pull {pending.dataset_id} REMOTE` with the remote the interrupted pull used{where}: "
        "it completes the promotion from the local staging copy before anything else. To abandon it "
        f"instead, run `rm -r {paths}` and pull again (the files already promoted stay as the "
        "remote had them; the next pull brings the rest)."
    )


def pending_message(pending: PendingPromotion) -> str:
    return (
        f"Dataset '{pending.dataset_id}' has an interrupted pull promotion pending "
        f"(journal {pending.journal}): some files are already the remote's, the rest are still staged."
    )


def refuse_if_pending(dataset_dir: Path | str, action: str) -> None:
    """Raise DatasetError when a pull promotion into `dataset_dir` is pending: `action` (a local
    mutation) would be overwritten or lost by the roll-forward. Call under the dataset lock."""
    found = pending_promotions(dataset_dir)
    if not found:
        return
    pending = found[0]
    raise DatasetError(
        f"{pending_message(pending)} Refusing `{action}` until it is completed.",
        hint=finish_hint(pending),
    )


def pending_problems(dataset_dir: Path | str) -> list[str]:
    """`validate` errors: one per pending promotion, with how to finish it."""
    return [f"{pending_message(p)} {finish_hint(p)}" for p in pending_promotions(dataset_dir)]
