"""R4 hostile remote (and hostile payloads on either side): what one side plants must never reach
outside the other side's dataset, replace a good copy with junk, or crash the tool.

Each case plants something, runs `usr pull` (remote hostile) or `usr push` (local hostile) as a
child process (60 s timeout: a FIFO must not hang it), and is judged on the TRUSTED side:
  converged  the command succeeded and both sides are identical and valid (benign odd names), or
             it refused with a clean `ERROR:` and the trusted side is exactly as before
  lost       a row, event line or overlay cell of the trusted side is gone
  corrupted  the trusted side fails validate or holds bytes no legitimate version had, or a
             sentinel file outside the datasets was removed or changed
  failed     a traceback, a hang, or a refusal that still changed the trusted side
"""

from __future__ import annotations

import json
import os
import random
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from . import datasets
from .r2_kills import crash_child
from .verdict import (
    Ledger,
    RunResult,
    SideState,
    foreign_files,
    lost_units,
    outside_touched,
    plant_sentinels,
    tree,
    validate,
)
from .world import DS, REMOTE, CliRun, World

NAME = "R4"
TITLE = "hostile remote: links, FIFOs, odd names, control names, junk payloads"


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _junk(size: int, seed: str) -> bytes:
    return random.Random(seed).randbytes(max(size, 64))


def _wrong_schema(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"a": [1, 2, 3], "b": ["x", "y", "z"]}), path)


def _overlay(ds: Path) -> Path:
    return next(p for p in sorted((ds / "_derived").rglob("*.parquet")))


@dataclass(frozen=True)
class Case:
    name: str
    direction: str  # pull: the remote plants; push: the local side plants
    plant: Callable[[Path, Path], None]  # (dataset dir of the planting side, run dir)
    benign: bool = False  # legitimate content: syncing it is as fine as refusing it clearly
    interrupted: bool = False  # the pull is first killed after staging, then re-run


def _journal(ds: Path, run: Path) -> None:
    victim = run / "local" / DS
    body = {
        "version": 1,
        "dataset_dir": str(victim),
        "install": [],
        "delete": ["../../../sentinel-outside.txt", "../../sentinel-root.txt", "records.parquet"],
    }
    _write(ds / ".usr-promotion.json", json.dumps(body).encode())


CASES = [
    Case(
        "symlink overlay -> /etc/hostname",
        "pull",
        lambda d, r: _symlink(d / "_derived/infer/evil.parquet", "/etc/hostname"),
    ),
    Case(
        "symlink aux -> file outside",
        "pull",
        lambda d, r: _symlink(d / "_artifacts/link.txt", str(r / "sentinel-outside.txt")),
    ),
    Case(
        "symlinked directory _artifacts -> outside", "pull", lambda d, r: _symlink(d / "_artifacts", str(r))
    ),
    Case("FIFO in _artifacts", "pull", lambda d, r: _fifo(d / "_artifacts/pipe")),
    Case(
        "name with a newline",
        "pull",
        lambda d, r: _write(d / "_artifacts/line\nbreak.txt", b"x\n"),
        benign=True,
    ),
    Case(
        "unicode name", "pull", lambda d, r: _write(d / "_artifacts/ünï cødé 名前.txt", b"x\n"), benign=True
    ),
    Case(
        "leading-dash names",
        "pull",
        lambda d, r: (_write(d / "_artifacts/-rf", b"x"), _write(d / "_artifacts/--help", b"y")),
        benign=True,
    ),
    Case("255-byte name", "pull", lambda d, r: _write(d / ("_artifacts/" + "x" * 255), b"x\n"), benign=True),
    Case("planted promotion journal", "pull", _journal),
    Case("planted promotion journal + interrupted pull", "pull", _journal, interrupted=True),
    Case("planted journal temp name", "pull", lambda d, r: _write(d / ".usr-promotion.json.tmp", b"{}")),
    Case(
        "planted upload temp name",
        "pull",
        lambda d, r: _write(d / ".usrbatch-tmp-deadbeef-records.parquet", b"junk"),
    ),
    Case(
        "planted lock and lease names",
        "pull",
        lambda d, r: (
            _write(d / ".usr.lock", b"x"),
            _write(d / ".events.lock", b"x"),
            _write(d / ".usr.lease.evil/x", b"x"),
        ),
    ),
    Case(
        "planted staging-dir name",
        "pull",
        lambda d, r: _write(d / ".usr-pull-densegen__drill-evil/records.parquet", b"junk"),
        benign=True,
    ),
    Case(
        "planted hash-cache name",
        "pull",
        lambda d, r: _write(d / ".hash-cache-evil.json", b"{}"),
        benign=True,
    ),
    Case(
        "junk bytes as records.parquet",
        "pull",
        lambda d, r: _write(d / "records.parquet", _junk((d / "records.parquet").stat().st_size, "r")),
    ),
    Case(
        "zero-filled records.parquet",
        "pull",
        lambda d, r: _write(d / "records.parquet", bytes((d / "records.parquet").stat().st_size)),
    ),
    Case("wrong-schema records.parquet", "pull", lambda d, r: _wrong_schema(d / "records.parquet")),
    Case(
        "junk bytes as overlay part",
        "pull",
        lambda d, r: _write(_overlay(d), _junk(_overlay(d).stat().st_size, "o")),
    ),
    Case(
        "zero-filled overlay part",
        "pull",
        lambda d, r: _write(_overlay(d), bytes(_overlay(d).stat().st_size)),
    ),
    Case("wrong-schema overlay part", "pull", lambda d, r: _wrong_schema(_overlay(d))),
    Case("non-UTF-8 meta.md", "pull", lambda d, r: _write(d / "meta.md", b"\xff\xfe junk \x80\n")),
    Case(
        "junk bytes as local records.parquet",
        "push",
        lambda d, r: _write(d / "records.parquet", _junk((d / "records.parquet").stat().st_size, "p")),
    ),
    Case("wrong-schema local overlay part", "push", lambda d, r: _wrong_schema(_overlay(d))),
]
DEFAULT_RUNS = len(CASES)


def _symlink(path: Path, target: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir() and not path.is_symlink():
        os.rename(path, path.with_name(path.name + ".orig"))
    os.symlink(target, path)


def _fifo(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)


def _child(w: World, root: Path, *args: str) -> CliRun:
    try:
        return w.usr_child(root, *args, timeout=60)
    except subprocess.TimeoutExpired:
        return CliRun(tuple(args), -9, "", "hung: no answer within 60 s")


def _one(w: World, index: int, case: Case) -> tuple[str, str]:
    local, remote = w.fresh(f"r4-{index}")
    run_dir = local.parent
    sentinels = plant_sentinels(run_dir)
    hostile, trusted = (remote, local) if case.direction == "pull" else (local, remote)
    datasets.place(w, "base", trusted)
    datasets.place(w, "ahead" if case.direction == "pull" else "base", hostile)
    (hostile / DS / "_artifacts").mkdir(exist_ok=True)
    (hostile / DS / "_artifacts" / "keep.txt").write_text("an auxiliary file\n")
    committed = Ledger()
    committed.add(trusted / DS)
    legit = Ledger()
    legit.add(trusted / DS)
    legit.add(hostile / DS)
    case.plant(hostile / DS, run_dir)
    if case.benign:
        legit.add(hostile / DS)
    before = tree(trusted / DS)
    problems = []
    args = (case.direction, DS, REMOTE, "-y")
    if case.interrupted:
        crash_child(w, local, "after-download", "0", *args)
    run = _child(w, local, *args)
    after = SideState.of(trusted / DS)
    if lost := lost_units(committed, [after]):
        return "lost", "; ".join(lost) + f"; command {run.brief()}"
    corrupt = outside_touched(sentinels)
    check = validate(w, trusted)
    if not check.ok:
        corrupt.append(f"the trusted side fails validate ({check.brief()})")
    if foreign := foreign_files(legit, after):
        corrupt.append(f"the trusted side holds bytes no legitimate version had: {foreign[:3]}")
    if corrupt:
        return "corrupted", "; ".join(corrupt) + f"; command {run.brief()}"
    if run.crash:
        problems.append(f"crashed: {run.crash.strip().splitlines()[-1][:200]}")
    elif run.ok:
        diff = w.usr(local, "diff", DS, REMOTE)
        if "Status     : up-to-date" not in diff.out.splitlines() or tree(local / DS) != tree(remote / DS):
            problems.append(f"{case.direction} succeeded but the sides differ ({diff.brief()})")
    else:
        if "ERROR:" not in run.out:
            problems.append(f"refused without an ERROR line: {run.brief()}")
        if tree(trusted / DS) != before:
            problems.append("refused, but the trusted side changed")
    return ("failed" if problems else "converged"), "; ".join(problems) or run.brief()[:160]


def run(w: World, seed: int, runs: int, only: int | None = None, repro: str = "") -> list[RunResult]:
    out = []
    for index in range(runs):
        if only is not None and index != only:
            continue
        case = CASES[index % len(CASES)]
        label = f"{case.direction}: {case.name}" + (" (benign)" if case.benign else "")
        try:
            outcome, detail = _one(w, index, case)
        except Exception as exc:  # noqa: BLE001 - a harness crash is a failed run, reported
            outcome, detail = "failed", f"harness error: {exc!r}"
        out.append(
            RunResult(
                NAME,
                index,
                label,
                outcome,
                detail if outcome != "converged" else "",
                f"{repro} --case {index}",
            )
        )
        if outcome == "converged":
            out[-1] = RunResult(NAME, index, f"{label}: {detail}", outcome, "", f"{repro} --case {index}")
    return out
