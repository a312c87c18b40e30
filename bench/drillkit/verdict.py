"""How a drill run is judged: what was committed before the fault (a ledger), what both sides
hold afterwards, and the outcome.

    lost       a committed unit (a row id, an event line, an overlay cell, an auxiliary file's
               bytes) that existed on either side before the fault is on neither side afterwards
    corrupted  a side fails `usr validate`, a file differs from every legitimate version of its
               path, or something outside the datasets was touched
    failed     none of the above, but the expected behaviour did not happen: no convergence after
               re-running the command, a traceback, a mutation that should have been refused, a
               leaked secret, a trust check that let a connection through
    converged  the rest: `usr diff` up-to-date, `usr validate` OK on both sides, identical trees
               (or, for refusals, a clean `ERROR:` and nothing changed)
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from usrbatch.dataset.layout import is_runtime

from .world import DS, REMOTE, CliRun, World

OUTCOMES = ("converged", "corrupted", "lost", "failed")
UP_TO_DATE = "Status     : up-to-date"


@dataclass(frozen=True)
class RunResult:
    """One drill run: its case, outcome, why, and how to run exactly this run again."""

    drill: str
    index: int
    case: str
    outcome: str
    detail: str = ""
    reproducer: str = ""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def tree(ds_dir: Path) -> dict[str, str]:
    """{relpath: sha256} of every regular non-runtime file (symlinks and specials: their kind)."""
    out: dict[str, str] = {}
    if not ds_dir.is_dir():
        return out
    for dirpath, dirs, files in os.walk(ds_dir):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(dirpath, d))]:
            full = Path(dirpath) / name
            rel = full.relative_to(ds_dir).as_posix()
            if is_runtime(rel):
                continue
            if full.is_symlink():
                out[rel] = "symlink:" + os.readlink(full)
            elif full.is_file():
                try:
                    out[rel] = sha256_file(full)
                except OSError as exc:
                    out[rel] = f"unreadable:{exc.errno}"
            else:
                out[rel] = "special"
    return out


def _rows(path: Path) -> set[str]:
    try:
        return {str(x) for x in pq.read_table(path, columns=["id"]).column("id").to_pylist()}
    except Exception:  # noqa: BLE001 - an unreadable primary holds no readable rows
        return set()


def _cells(ds_dir: Path) -> set[tuple[str, str, str]]:
    """(column, key, value) of every overlay cell under _derived (key: id or sequence)."""
    out: set[tuple[str, str, str]] = set()
    derived = ds_dir / "_derived"
    if not derived.is_dir():
        return out
    for path in derived.rglob("*.parquet"):
        if is_runtime(path.relative_to(ds_dir).as_posix()) or path.is_symlink():
            continue
        try:
            table = pq.read_table(path)
        except (pa.ArrowException, OSError):
            continue
        key = "id" if "id" in table.column_names else "sequence" if "sequence" in table.column_names else None
        if key is None:
            continue
        keys = [str(k) for k in table.column(key).to_pylist()]
        for name in table.column_names:
            if name in ("id", "sequence"):
                continue
            for k, v in zip(keys, table.column(name).to_pylist(), strict=False):
                out.add((name, k, repr(v)))
    return out


def _events(path: Path) -> set[bytes]:
    try:
        return {line for line in path.read_bytes().split(b"\n") if line.strip()}
    except OSError:
        return set()


@dataclass(frozen=True)
class SideState:
    files: dict[str, str]
    rows: frozenset[str]
    events: frozenset[bytes]
    cells: frozenset[tuple[str, str, str]]

    @classmethod
    def of(cls, ds_dir: Path) -> SideState:
        return cls(
            files=tree(ds_dir),
            rows=frozenset(_rows(ds_dir / "records.parquet")),
            events=frozenset(_events(ds_dir / ".events.log")),
            cells=frozenset(_cells(ds_dir)),
        )


@dataclass
class Ledger:
    """Every legitimate version of every path, and every committed unit, seen so far."""

    versions: dict[str, set[str]] = field(default_factory=dict)
    rows: set[str] = field(default_factory=set)
    events: set[bytes] = field(default_factory=set)
    cells: set[tuple[str, str, str]] = field(default_factory=set)
    aux: set[tuple[str, str]] = field(default_factory=set)  # auxiliary files (path, sha256)

    def add(self, ds_dir: Path) -> SideState:
        state = SideState.of(ds_dir)
        for rel, sha in state.files.items():
            self.versions.setdefault(rel, set()).add(sha)
            if rel.startswith("_artifacts/"):
                self.aux.add((rel, sha))
        self.rows |= state.rows
        self.events |= state.events
        self.cells |= state.cells
        return state

    def all_hashes(self) -> set[str]:
        return set().union(*self.versions.values()) if self.versions else set()


def lost_units(ledger: Ledger, after: list[SideState]) -> list[str]:
    """Committed units present on no side afterwards (what a `lost` run lost)."""
    rows = set().union(*(s.rows for s in after))
    events = set().union(*(s.events for s in after))
    cells = set().union(*(s.cells for s in after))
    files = set().union(*({(k, v) for k, v in s.files.items()} for s in after))
    out = []
    if gone := ledger.rows - rows:
        out.append(f"{len(gone)} row(s) gone (e.g. {sorted(gone)[0]})")
    if gone := ledger.events - events:
        out.append(f"{len(gone)} event line(s) gone (e.g. {sorted(gone)[0][:80]!r})")
    if gone := ledger.cells - cells:
        out.append(f"{len(gone)} overlay cell(s) gone (e.g. {sorted(gone)[0]})")
    if gone := ledger.aux - files:
        out.append(f"auxiliary file(s) gone: {sorted(gone)[:3]}")
    return out


def foreign_files(ledger: Ledger, state: SideState) -> list[str]:
    """Files whose content matches no legitimate version of their path. A new `_snapshots/` file
    is legitimate when it holds a legitimate version of records.parquet."""
    records = ledger.versions.get("records.parquet", set()) | {
        sha for rel, shas in ledger.versions.items() if rel.startswith("_snapshots/") for sha in shas
    }
    bad = []
    for rel, sha in sorted(state.files.items()):
        legit = ledger.versions.get(rel)
        if legit is not None and sha in legit:
            continue
        if legit is None and rel.startswith("_snapshots/") and sha in records:
            continue
        bad.append(rel)
    return bad


def validate(w: World, root: Path) -> CliRun:
    return w.usr(root, "validate", DS)


def judge(
    w: World,
    ledger: Ledger,
    local: Path,
    remote: Path,
    *,
    problems: list[str] | None = None,
    remote_name: str = REMOTE,
    sentinels: dict[Path, str] | None = None,
    env: dict[str, str] | None = None,
) -> tuple[str, str]:
    """The outcome of a run whose contract is "both sides end identical" (see module doc)."""
    problems = list(problems or [])
    sides = {"local": local, "remote": remote}
    after = {name: SideState.of(root / DS) for name, root in sides.items()}
    if lost := lost_units(ledger, list(after.values())):
        return "lost", "; ".join(lost + problems)
    corrupt = outside_touched(sentinels or {})
    for name, root in sides.items():
        if not (root / DS).exists():
            problems.append(f"the {name} dataset does not exist")
            continue
        run = validate(w, root)
        if not run.ok:
            corrupt.append(f"{name} fails validate ({run.brief()})")
        if foreign := foreign_files(ledger, after[name]):
            corrupt.append(f"{name} holds files matching no legitimate version: {foreign[:5]}")
    if corrupt:
        return "corrupted", "; ".join(corrupt + problems)
    diff = w.usr(local, "diff", DS, remote_name, env=env)
    if diff.crash or UP_TO_DATE not in diff.out.splitlines():
        problems.append(f"diff not up-to-date ({diff.brief()})")
    elif after["local"].files != after["remote"].files:
        problems.append("diff says up-to-date but the trees differ")
    if problems:
        return "failed", "; ".join(problems)
    return "converged", ""


def outside_touched(sentinels: dict[Path, str]) -> list[str]:
    """Sentinel files outside every dataset: each must still hold its bytes."""
    out = []
    for path, sha in sentinels.items():
        if not path.is_file():
            out.append(f"a file outside the datasets was removed: {path}")
        elif sha256_file(path) != sha:
            out.append(f"a file outside the datasets was changed: {path}")
    return out


def plant_sentinels(run_dir: Path) -> dict[Path, str]:
    """Files beside the datasets roots that no sync may touch."""
    out = {}
    for name in ("sentinel-outside.txt", "local/sentinel-root.txt"):
        path = run_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"sentinel {name}\n")
        out[path] = sha256_file(path)
    return out


def settle(w: World, root: Path, args: list[str], tries: int = 3) -> tuple[CliRun, list[str]]:
    """Re-run a command until it succeeds (at most `tries` times): the last run, and problems."""
    problems: list[str] = []
    run = w.usr(root, *args)
    for _ in range(tries - 1):
        if run.ok or run.crash:
            break
        run = w.usr(root, *args)
    if run.crash:
        problems.append(f"`usr {' '.join(args)}` crashed: {run.crash.strip().splitlines()[-1]}")
    elif not run.ok:
        problems.append(f"`usr {' '.join(args)}` still fails after {tries} tries: {run.brief()}")
    return run, problems
