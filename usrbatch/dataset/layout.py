"""The USR on-disk layout: dataset ids, dataset paths, the datasets under a root, and the sync
category of every file (standard library only: sync and `usr ls` need no pyarrow for these)."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from usrbatch import files
from usrbatch.errors import DatasetError

RECORDS = "records.parquet"
META = "meta.md"
EVENTS = ".events.log"
SNAPSHOTS_DIR = "_snapshots"
DERIVED_DIR = "_derived"
REGISTRY_DIR = "_registry"
REGISTRY_FILE = "registry.yaml"  # at the datasets root, not inside a dataset

DATASET_LOCK = ".usr.lock"
EVENTS_LOCK = ".events.lock"
TRANSFER_LOCK = ".usr.transfer.lock"
LEASE_PREFIX = ".usr.lease."
# Our own temporary names (uploads beside their targets, atomic writes): never inventoried.
TEMP_PREFIX = files.TEMP_PREFIX

RUNTIME_NAMES = frozenset({DATASET_LOCK, EVENTS_LOCK, TRANSFER_LOCK})
# Pull control files at the datasets root: `<root>/.usr-pull-<id, / → __>-<random>/` holds the
# staged payload and `<that dir name>.promotion.json` beside it is the promotion journal, so no
# staged (remote-named) file can ever be read as the journal.
STAGING_PREFIX = ".usr-pull-"
JOURNAL_SUFFIX = ".promotion.json"
# Names a dataset never holds as data (ours, in any directory): a remote file named so is refused.
RESERVED_PREFIXES = (STAGING_PREFIX, ".usr-promotion")
SNAPSHOT_NAME = re.compile(r"^records-\d{8}T\d{6,}\.parquet$")


class Category(StrEnum):
    PRIMARY = "primary"
    META = "meta"
    EVENTS = "events"
    SNAPSHOTS = "snapshots"
    DERIVED = "derived"
    AUXILIARY = "auxiliary"
    RUNTIME = "runtime"


def _parts(relpath: str) -> list[str]:
    """`PurePosixPath(relpath).parts` for a relative path, without building a path object (this
    runs for every file of every inventory: a string split is ~20x cheaper)."""
    parts = relpath.split("/")
    if "" in parts or "." in parts:
        return [p for p in parts if p and p != "."]
    return parts


# Every runtime and reserved name starts with a dot, so a path with no dot-led part is neither
# (the common case, checked for every file of every inventory).
_ALL_DOT_LED = all(
    name.startswith(".") for name in (*RUNTIME_NAMES, LEASE_PREFIX, TEMP_PREFIX, *RESERVED_PREFIXES)
)


def _no_dot_led_part(relpath: str) -> bool:
    return _ALL_DOT_LED and not relpath.startswith(".") and "/." not in relpath


def is_runtime(relpath: str) -> bool:
    """True for lock/lease/temp paths that sync never inventories nor transfers."""
    if _no_dot_led_part(relpath):
        return False
    parts = _parts(relpath)
    if not parts:
        return False
    top = parts[0]
    if top in RUNTIME_NAMES or top.startswith(LEASE_PREFIX):
        return True
    return any(p.startswith(TEMP_PREFIX) for p in parts)


def is_reserved(relpath: str) -> bool:
    """True for a path that names one of our runtime or control files (locks, leases, temps,
    pull staging dirs and promotion journals): such a path is never dataset payload."""
    if _no_dot_led_part(relpath):
        return False
    if is_runtime(relpath):
        return True
    return any(part.startswith(RESERVED_PREFIXES) for part in _parts(relpath))


def classify(relpath: str) -> Category:
    """The sync category of a path relative to the dataset dir (POSIX separators)."""
    if is_runtime(relpath):
        return Category.RUNTIME
    parts = _parts(relpath)
    if relpath == RECORDS:
        return Category.PRIMARY
    if relpath == META:
        return Category.META
    if relpath == EVENTS:
        return Category.EVENTS
    if parts[0] == SNAPSHOTS_DIR and len(parts) > 1:
        return Category.SNAPSHOTS
    if parts[0] == DERIVED_DIR and len(parts) > 1:
        return Category.DERIVED
    return Category.AUXILIARY


def normalize_dataset_id(raw: str) -> str:
    """Validate and normalize a dataset id: flat `name` or `namespace/name`.

    Raises DatasetError naming the problem for empty, absolute, `.`/`..`, empty components,
    backslashes, an `archived` first component, control characters, and components named like
    dataset internals (`_snapshots`, `_derived`, `_registry`, dot-names, records.parquet, ...).
    """
    text = (raw or "").strip()
    if not text:
        raise DatasetError("Dataset id is empty. Pass a dataset id like 'demo' or 'densegen/demo'.")
    if text.startswith("/") or text.startswith("~"):
        raise DatasetError(
            f"Dataset id '{raw}' is an absolute path. Pass a relative id like 'densegen/demo' "
            "(use --root to choose the datasets root)."
        )
    if "\\" in text or "\x00" in text:
        raise DatasetError(
            f"Dataset id '{raw}' contains a backslash or NUL. Use '/' between namespace and name."
        )
    parts = text.rstrip("/").split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise DatasetError(
            f"Dataset id '{raw}' has an empty, '.' or '..' component. Use 'name' or 'namespace/name'."
        )
    if len(parts) > 2:
        raise DatasetError(
            f"Dataset id '{raw}' has more than two components. Use 'name' or 'namespace/name'."
        )
    if parts[0] == "archived":
        raise DatasetError(f"Dataset id '{raw}' starts with 'archived', which is reserved.")
    for part in parts:
        _check_id_component(raw, part)
    return "/".join(parts)


# Names a dataset dir holds itself: an id component with one of these names would put a dataset
# inside another one's internals (or hide it: `ls` skips `.`/`_` names, as the public tool does).
_INTERNAL_NAMES = frozenset({RECORDS, META, REGISTRY_FILE})


def _check_id_component(raw: str, part: str) -> None:
    for ch in part:
        if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
            raise DatasetError(
                f"Dataset id {raw!r} contains the control character U+{ord(ch):04X}. "
                "Use letters, digits, '-', '_' and '.' in dataset ids."
            )
    if part.startswith((".", "_")) or part in _INTERNAL_NAMES:
        raise DatasetError(
            f"Dataset id '{raw}' has the component '{part}', a name reserved for dataset internals "
            f"({SNAPSHOTS_DIR}, {DERIVED_DIR}, {REGISTRY_DIR}, {EVENTS}, {RECORDS}, ...; no component may "
            "start with '.' or '_'). Choose another name."
        )


def dataset_dir(root: Path, dataset_id: str) -> Path:
    """The directory of a dataset id under a datasets root."""
    return Path(root) / normalize_dataset_id(dataset_id)


@dataclass(frozen=True)
class DatasetLocation:
    """Where a dataset dir sits: its datasets root and its id (flat or namespace/name)."""

    root: Path
    dataset_id: str


def locate(dataset_dir: Path | str) -> DatasetLocation:
    """Infer (root, id) for a dataset dir: the nearest ancestor (≤2 up) holding registry.yaml, else the parent."""
    directory = Path(dataset_dir).absolute()
    for up in (1, 2):
        candidate = directory.parents[up - 1] if len(directory.parents) >= up else None
        if candidate is not None and (candidate / REGISTRY_FILE).is_file():
            return DatasetLocation(candidate, directory.relative_to(candidate).as_posix())
    return DatasetLocation(directory.parent, directory.name)


def list_datasets(root: Path | str) -> list[str]:
    """Ids of datasets under `root`: dirs holding records.parquet, flat or `namespace/name`."""
    base = Path(root)
    if not base.is_dir():
        raise DatasetError(f"Datasets root not found: {base}. Pass --root or set USR_ROOT.")
    found: list[str] = []
    for first in sorted(base.iterdir()):
        if not first.is_dir() or first.name.startswith((".", "_")) or first.name == "archived":
            continue
        if (first / RECORDS).is_file():
            found.append(first.name)
            continue
        for second in sorted(first.iterdir()):
            if second.is_dir() and not second.name.startswith((".", "_")) and (second / RECORDS).is_file():
                found.append(f"{first.name}/{second.name}")
    return [i for i in found if _valid_id(i)]


def _valid_id(dataset_id: str) -> bool:
    try:
        normalize_dataset_id(dataset_id)
    except DatasetError:
        return False
    return True
