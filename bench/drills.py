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

The table (and every non-converged run with its reproducer) is printed and, unless --quick, --case
or --no-doc, merged into docs/reliability.json (one row per drill: counts, findings, the exact
command, commit, machine and date) and rendered to docs/reliability.md; drills not run keep their
previous row.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import socket
import subprocess
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


def summarize(name: str, rows: list[RunResult], command: str, seconds: float) -> dict:
    """One drill's row of docs/reliability.json: counts, findings, and how it was produced."""
    counts = {o: sum(1 for r in rows if r.outcome == o) for o in OUTCOMES}
    return {
        "title": DRILLS[name].TITLE,
        "runs": len(rows),
        **counts,
        "findings": findings(rows),
        "command": command,
        "commit": git_head(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "seconds": round(seconds),
        "ssh_backend": ssh_backend(),
    }


def table(rows: dict[str, dict]) -> list[str]:
    lines = [
        "| drill | what | runs | converged | corrupted | lost | failed |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name in sorted(rows):
        r = rows[name]
        lines.append(
            f"| {name} | {r['title']} | {r['runs']} | {r['converged']} | {r['corrupted']} | {r['lost']} | {r['failed']} |"
        )
    return lines


def findings(rows: list[RunResult]) -> list[str]:
    lines = []
    for r in rows:
        if r.outcome == "converged":
            continue
        detail = " ".join(r.detail.split())[:600]
        lines.append(f"- **{r.drill} #{r.index} {r.outcome}**: {r.case}. {detail}  \n  `{r.reproducer}`")
    return lines


def machine() -> str:
    return f"{socket.gethostname()}, {platform.system()} {platform.release()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def ssh_backend() -> str:
    """The ssh transport the drills' remotes used (they name none: the factory's default)."""
    try:
        from usrbatch.transport.factory import TRANSPORT_ENV, TRANSPORTS  # noqa: F401
    except ImportError:
        return "paramiko"
    chosen = os.environ.get("USRBATCH_SSH_TRANSPORT", "").strip()
    return chosen or ("openssh" if shutil.which("ssh") else "paramiko")


def git_head() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def write_doc(doc: Path, new: dict[str, dict]) -> None:
    """Merge `new` rows into <doc>.json (drills not run now keep their last row) and render <doc>."""
    store = doc.with_suffix(".json")
    doc.parent.mkdir(parents=True, exist_ok=True)
    rows = json.loads(store.read_text()) if store.is_file() else {}
    rows.update(new)
    store.write_text(json.dumps(rows, indent=1, sort_keys=True) + "\n")
    text = [
        "# Reliability drills",
        "",
        "Produced by `bench/drills.py` (how each outcome is decided: its docstring and",
        "`bench/drillkit/verdict.py`). Every run injects one fault against the real sshd (R8: the real",
        "SGE and Slurm), then re-runs the command and checks both sides. The rows and findings are",
        "also in `docs/reliability.json`; each row says below which command produced it.",
        "",
        *table(rows),
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
        "## How each row was produced",
        "",
    ]
    for name in sorted(rows):
        r = rows[name]
        backend = r.get("ssh_backend") or "paramiko (the only ssh backend at that commit)"
        text.append(
            f"- {name}: `{r['command']}` at commit {r['commit']}, {r['date']}, {r['seconds']} s, "
            f"ssh backend {backend}; {r['machine']}"
        )
    text += ["", "## Runs that did not converge", ""]
    bad = [line for name in sorted(rows) for line in rows[name]["findings"]]
    text += bad or ["None."]
    doc.write_text("\n".join(text) + "\n")


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
    rows: dict[str, dict] = {}
    with world(keep=args.keep, small=args.quick) as w:
        if args.keep:
            print(f"world: {w.tmp}", flush=True)
        for name in names:
            t0 = time.monotonic()
            repro = base.format(name=name) + (" --quick" if args.quick else "")
            results[name] = run_drill(w, name, args.seed, counts[name], args.case, repro)
            rows[name] = summarize(name, results[name], command, time.monotonic() - t0)
            print(f"{name}: {len(results[name])} run(s) in {time.monotonic() - t0:.1f}s", flush=True)
            for r in results[name] if args.verbose else []:
                print(f"  #{r.index} {r.outcome}: {r.case}", flush=True)
    print("\n".join(table(rows)))
    bad = [line for rs in results.values() for line in findings(rs)]
    if bad:
        print("\nRuns that did not converge:\n" + "\n".join(bad))
    if not (args.quick or args.no_doc or args.case is not None):
        write_doc(args.doc, rows)
        print(f"wrote {args.doc} (and {args.doc.with_suffix('.json').name})")
    clean = all(r.outcome == "converged" for rs in results.values() for r in rs)
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
