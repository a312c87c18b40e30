"""What a sync target names (§6, §10): a single file (FILE mode), a dataset directory, or a
dataset id, and how a dataset id is resolved for diff, pull (bootstrap) and push.

* FILE mode: the target ends with `.parquet`, or exists and is a file. A bare target that is also
  the id of a different local dataset is refused as ambiguous (`is_file_mode`).
* Dataset dir: an existing directory holding records.parquet, resolved against the datasets root,
  else against its nearest `registry.yaml` ancestor.
* Dataset id: an id containing `/` is only normalized. A flat id is looked up locally (`<id>` or a
  unique `<ns>/<id>` under the root; several matches are an error listing them). Diff and pull then
  accept the raw normalized id when nothing matches locally (bootstrap); push requires the dataset
  to exist locally. Strict bootstrap (pull `--strict-bootstrap-id` or
  USR_SYNC_STRICT_BOOTSTRAP_ID) only normalizes: no local name guessing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from usrbatch.dataset.layout import RECORDS, REGISTRY_FILE, list_datasets, normalize_dataset_id
from usrbatch.errors import DatasetError

STRICT_ENV = "USR_SYNC_STRICT_BOOTSTRAP_ID"
TRUE_VALUES = frozenset({"1", "true", "yes", "on"})
Action = Literal["diff", "pull", "push"]


def is_file_target(raw: str) -> bool:
    """FILE mode: ends with `.parquet`, or exists and is a file."""
    return raw.endswith(".parquet") or Path(raw).expanduser().is_file()


def _is_explicit_path(raw: str) -> bool:
    """`./x`, `../x`, `/x`, `~/x`: the user spelled a path, so it cannot also mean a dataset id."""
    return raw.startswith(("./", "../", "/", "~")) or raw in (".", "..")


def _local_dataset_dir(root: Path, raw: str) -> Path | None:
    """The local dataset directory `raw` names as a dataset id, or None (not an id, not local, or
    a flat id with several matches, which resolution reports on its own)."""
    try:
        ds = normalize_dataset_id(raw)
    except DatasetError:
        return None
    if "/" not in ds:
        matches = local_matches(root, ds)
        ds = matches[0] if len(matches) == 1 else ds
    directory = Path(root) / ds
    return directory if (directory / RECORDS).is_file() else None


def is_file_mode(root: Path, raw: str) -> bool:
    """FILE mode (see `is_file_target`), refusing a target that means two different things.

    A bare target (no `./`, `/` or `~`) that names an existing file or dataset directory in the
    working directory while it is also the id of a different local dataset is a DatasetError that
    says how to choose: `./<target>` for the path, the dataset's directory for the dataset. So a
    stray `./demo` never turns `usr pull demo …` into a FILE-mode overwrite of that file.
    """
    as_path = Path(raw).expanduser()
    if not _is_explicit_path(raw) and (as_path.is_file() or is_dataset_dir_target(raw)):
        dataset = _local_dataset_dir(root, raw)
        if dataset is not None and as_path.resolve() != dataset.resolve():
            kind = "a file" if as_path.is_file() else "a dataset directory"
            raise DatasetError(
                f"Target '{raw}' is ambiguous: ./{raw} is {kind} in the working directory, and '{raw}' "
                f"is also the dataset {dataset.relative_to(root).as_posix()} under {root}.",
                hint=f"Pass './{raw}' to sync the path in the working directory"
                + (" (FILE mode)" if as_path.is_file() else "")
                + f", or the dataset's directory '{dataset}' to sync the dataset.",
            )
    return is_file_target(raw)


def is_dataset_dir_target(raw: str) -> bool:
    """An existing directory that holds records.parquet."""
    candidate = Path(raw).expanduser()
    return candidate.is_dir() and (candidate / RECORDS).is_file()


def strict_bootstrap_enabled(flag: bool, environ: Mapping[str, str] | None = None) -> bool:
    """The pull flag, or USR_SYNC_STRICT_BOOTSTRAP_ID in {1, true, yes, on} (any case)."""
    env = os.environ if environ is None else environ
    return flag or env.get(STRICT_ENV, "").strip().lower() in TRUE_VALUES


def resolve_dataset_dir(root: Path, raw: str) -> tuple[Path, str]:
    """(datasets root, id) of a dataset directory: relative to `root`, else to the nearest
    ancestor holding registry.yaml; DatasetError otherwise."""
    path = Path(raw).expanduser().resolve()
    try:
        return root, normalize_dataset_id(path.relative_to(Path(root).resolve()).as_posix())
    except ValueError:
        pass
    for ancestor in path.parents:
        if (ancestor / REGISTRY_FILE).is_file():
            return ancestor, normalize_dataset_id(path.relative_to(ancestor).as_posix())
    raise DatasetError(
        "Dataset directory path is outside --root and no registry.yaml ancestor was found. "
        "Pass --root <usr_dataset_root> or use a dataset id."
    )


def local_matches(root: Path, dataset_id: str) -> list[str]:
    """Local datasets a flat id can name: `<id>` itself and every `<ns>/<id>`, sorted."""
    try:
        found = list_datasets(root)
    except DatasetError:  # no datasets root yet (a first bootstrap pull creates it)
        return []
    return sorted(d for d in found if d.split("/")[-1] == dataset_id)


def resolve_dataset_id(root: Path, raw: str, *, action: Action, strict: bool = False) -> str:
    """The dataset id a CLI argument names for `action` (see the module doc).

    Raises DatasetError: an invalid id (strict: `...explicit canonical dataset id...`), an
    ambiguous flat id (the candidates are listed), or a push of a dataset missing locally.
    """
    if strict:
        try:
            return normalize_dataset_id(raw)
        except DatasetError as exc:
            raise DatasetError(
                f"Strict bootstrap mode requires an explicit canonical dataset id ('name' or "
                f"'namespace/name'), got '{raw}': {exc.message}",
                hint=f"Pass the dataset id exactly as it is named under the remote base_dir, or unset {STRICT_ENV}.",
            ) from None
    ds = normalize_dataset_id(raw)
    if "/" not in ds:
        matches = local_matches(root, ds)
        if len(matches) > 1:
            raise DatasetError(
                f"Ambiguous dataset name '{ds}' under {root}. Use a namespace-qualified id. "
                f"Matches: {', '.join(matches)}"
            )
        if matches:
            ds = matches[0]
    if action == "push" and not (Path(root) / ds / RECORDS).is_file():
        raise DatasetError(
            f"Dataset not found: {ds} (no {RECORDS} under {Path(root) / ds}); push needs the dataset locally.",
            hint="Pass --root <usr_dataset_root> (or set USR_ROOT) to the root that holds it, "
            "or `usr pull` it first.",
        )
    return ds


def resolve_dataset_target(root: Path, raw: str, *, action: Action, strict: bool = False) -> tuple[Path, str]:
    """(datasets root, dataset id) for a dataset directory or a dataset id (not FILE mode)."""
    if is_dataset_dir_target(raw):
        return resolve_dataset_dir(root, raw)
    return root, resolve_dataset_id(root, raw, action=action, strict=strict)
