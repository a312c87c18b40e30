"""Reliability drills R1-R8 against the real sshd (and SGE/Slurm for R8): count, per drill, the runs
that converged, corrupted or lost data, and publish the table in docs/reliability.md.

    uv run python bench/drills.py                      # every drill, default run counts
    uv run python bench/drills.py --runs 0.2           # a fifth of the runs of each drill
    uv run python bench/drills.py --only R1,R2 --seed 7
    uv run python bench/drills.py --only R1 --case 12  # exactly one run again (its reproducer)
    uv run python bench/drills.py --quick              # a handful of runs each (what the tests run)

Every run is classified (bench/drillkit/verdict.py):
  converged  after the fault, re-running the command brings both sides to a verified identical
             state (`usr diff` up-to-date, `usr validate` OK on both), or a refusal was clean
  corrupted  a side fails validate, a file differs from every legitimate version, or something
             outside the datasets was touched
  lost       a committed row, event line, overlay cell or auxiliary file is on neither side
  failed     none of those, but the expected behaviour did not happen (no convergence, a
             traceback, an accepted mutation during a pending promotion, a leaked secret, ...)
A crash of the harness itself in a run is `failed`, never `converged`.

The table (and every non-converged run with its reproducer) is printed and, unless --quick or
--no-doc, written to docs/reliability.md with the exact command, the machine and the date.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import socket
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from drillkit import (  # noqa: E402
    r1_cuts,
    r2_kills,
    r3_races,
    r4_hostile,
    r5_trust,
    r6_secrets,
    r7_fuzz,
    r8_scheduler,
)
from drillkit.verdict import OUTCOMES, RunResult  # noqa: E402
from drillkit.world import REPO, world  # noqa: E402

DRILLS = {
    m.NAME: m for m in (r1_cuts, r2_kills, r3_races, r4_hostile, r5_trust, r6_secrets, r7_fuzz, r8_scheduler)
}
QUICK_RUNS = {"R1": 4, "R2": 4, "R3": 2, "R4": 0, "R5": 0, "R6": 0, "R7": 12, "R8": 0}


def run_counts(scale: float, quick: bool) -> dict[str, int]:
    if quick:
        return {
            name: QUICK_RUNS.get(name, 2) or len(getattr(m, "CASES", [])) or 2 for name, m in DRILLS.items()
        }
    return {name: max(1, round(m.DEFAULT_RUNS * scale)) for name, m in DRILLS.items()}


def run_drill(w, name: str, seed: int, runs: int, case: int | None, repro: str) -> list[RunResult]:
    """One drill; a crash of the harness is reported as a failed run, never swallowed."""
    module = DRILLS[name]
    try:
        return module.run(w, seed, runs, only=case, repro=repro)
    except Exception:  # noqa: BLE001 - reported as a failed run below
        return [
            RunResult(
                name, -1, "harness", "failed", "the drill crashed: " + traceback.format_exc()[-1500:], repro
            )
        ]


def table(results: dict[str, list[RunResult]]) -> list[str]:
    lines = [
        "| drill | what | runs | converged | corrupted | lost | failed |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, rows in results.items():
        counts = {o: sum(1 for r in rows if r.outcome == o) for o in OUTCOMES}
        lines.append(
            f"| {name} | {DRILLS[name].TITLE} | {len(rows)} | {counts['converged']} | "
            f"{counts['corrupted']} | {counts['lost']} | {counts['failed']} |"
        )
    return lines


def findings(results: dict[str, list[RunResult]]) -> list[str]:
    lines = []
    for rows in results.values():
        for r in rows:
            if r.outcome == "converged":
                continue
            detail = " ".join(r.detail.split())[:600]
            lines.append(f"- **{r.drill} #{r.index} {r.outcome}**: {r.case}. {detail}  \n  `{r.reproducer}`")
    return lines


def machine() -> str:
    return f"{socket.gethostname()}, {platform.system()} {platform.release()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def write_doc(path: Path, command: str, results: dict[str, list[RunResult]], seconds: float) -> None:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = [
        "# Reliability drills",
        "",
        "Produced by `bench/drills.py` (how each outcome is decided: its docstring and",
        "`bench/drillkit/verdict.py`). Every run injects one fault against the real sshd (R8: the real",
        "SGE and Slurm), then re-runs the command and checks both sides.",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine()}  ",
        f"Date: {now} (took {seconds:.0f} s)",
        "",
        *table(results),
        "",
        "Outcomes: **converged** = after the fault, re-running the command brings both sides to a",
        "verified identical state (`usr diff` up-to-date, `usr validate` OK on both) or the command",
        "refused cleanly and changed nothing; **corrupted** = a side fails validate, a file matches no",
        "legitimate version, or a file outside the datasets was touched; **lost** = a committed row,",
        "event line, overlay cell or auxiliary file existing on either side before the fault is on",
        "neither side after; **failed** = none of those but the expected behaviour did not happen",
        "(no convergence, a traceback, a mutation accepted during a pending promotion, a leaked",
        "secret, a trust check that let a connection through).",
        "",
        "## Runs that did not converge",
        "",
        *(findings(results) or ["None."]),
        "",
    ]
    path.write_text("\n".join(text))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=8, help="seed of every random choice (default 8)")
    ap.add_argument("--runs", type=float, default=1.0, help="scale every drill's run count (default 1.0)")
    ap.add_argument("--only", default="", help="comma-separated drills, e.g. R1,R4")
    ap.add_argument("--case", type=int, default=None, help="run only this run index (with one --only)")
    ap.add_argument("--quick", action="store_true", help="a handful of runs per drill; no doc written")
    ap.add_argument("--doc", type=Path, default=REPO / "docs" / "reliability.md")
    ap.add_argument("--no-doc", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (for inspecting a failure)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every run, not only the failures")
    args = ap.parse_args()
    names = [n.strip().upper() for n in args.only.split(",") if n.strip()] or list(DRILLS)
    unknown = [n for n in names if n not in DRILLS]
    if unknown:
        ap.error(f"unknown drill(s) {unknown}; choose from {', '.join(DRILLS)}")
    if args.case is not None and len(names) != 1:
        ap.error("--case needs exactly one drill in --only")
    counts = run_counts(args.runs, args.quick)
    command = "uv run python bench/drills.py " + shlex.join(sys.argv[1:])
    base = f"uv run python bench/drills.py --only {{name}} --seed {args.seed} --runs {args.runs:g}"
    results: dict[str, list[RunResult]] = {}
    started = time.monotonic()
    with world(keep=args.keep, small=args.quick) as w:
        if args.keep:
            print(f"world: {w.tmp}", flush=True)
        for name in names:
            t0 = time.monotonic()
            repro = base.format(name=name) + (" --quick" if args.quick else "")
            results[name] = run_drill(w, name, args.seed, counts[name], args.case, repro)
            print(f"{name}: {len(results[name])} run(s) in {time.monotonic() - t0:.1f}s", flush=True)
            for r in results[name] if args.verbose else []:
                print(f"  #{r.index} {r.outcome}: {r.case}", flush=True)
    print("\n".join(table(results)))
    bad = findings(results)
    if bad:
        print("\nRuns that did not converge:\n" + "\n".join(bad))
    if not (args.quick or args.no_doc or args.case is not None):
        write_doc(args.doc, command, results, time.monotonic() - started)
        print(f"wrote {args.doc}")
    clean = all(r.outcome == "converged" for rows in results.values() for r in rows)
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
