"""R1 connection cuts: a TCP proxy between client and sshd drops the connection once, at a random
byte offset of a push or a pull (handshake, inventory, transfer, apply: wherever it lands).

Per run: fresh sides (source side `ahead`, destination `base`), the cut armed at a uniform random
offset in [1, 1.1 x the bytes a clean run relays], the command through the proxy, then the same
command re-run (at most 3 times) without a cut; judged by verdict.judge.
"""

from __future__ import annotations

import random

from . import datasets
from .verdict import Ledger, RunResult, judge, settle
from .world import CUT_REMOTE, DS, World

NAME = "R1"
TITLE = "connection cuts (TCP proxy, random byte offset)"
DEFAULT_RUNS = 100  # 50 push + 50 pull


def _sides(w: World, direction: str, label: str):
    local, remote = w.fresh(label)
    src, dst = (local, remote) if direction == "push" else (remote, local)
    datasets.place(w, "ahead", src)
    datasets.place(w, "base", dst)
    return local, remote


def _clean_bytes(w: World, direction: str) -> int:
    """Bytes the proxy relays for an uncut run of `direction` (both directions, all connections)."""
    local, _remote = _sides(w, direction, f"r1-calibrate-{direction}")
    before = w.proxy.bytes_relayed
    run = w.usr(local, direction, DS, CUT_REMOTE, "-y")
    if not run.ok:
        raise RuntimeError(f"R1 calibration {direction} failed: {run.brief()}")
    return w.proxy.bytes_relayed - before


def plan(runs: int) -> list[str]:
    return ["push" if i % 2 == 0 else "pull" for i in range(runs)]


def run(w: World, seed: int, runs: int, only: int | None = None, repro: str = "") -> list[RunResult]:
    totals = {d: _clean_bytes(w, d) for d in ("push", "pull")}
    out = []
    for index, direction in enumerate(plan(runs)):
        if only is not None and index != only:
            continue
        rng = random.Random(f"{seed}-{NAME}-{index}")
        offset = rng.randrange(1, int(totals[direction] * 1.1))
        case = f"{direction} cut after {offset} of ~{totals[direction]} bytes"
        local, remote = _sides(w, direction, f"r1-{index}")
        ledger = Ledger()
        ledger.add(local / DS)
        ledger.add(remote / DS)
        cuts = w.proxy.cuts
        w.proxy.cut_after(offset)
        first = w.usr(local, direction, DS, CUT_REMOTE, "-y")
        w.proxy.disarm()
        problems = []
        if first.crash:
            problems.append(f"the cut {direction} crashed: {first.crash.strip().splitlines()[-1]}")
        _last, more = settle(w, local, [direction, DS, CUT_REMOTE, "-y"])
        problems += more
        outcome, detail = judge(w, ledger, local, remote, problems=problems, remote_name=CUT_REMOTE)
        hit = "cut" if w.proxy.cuts > cuts else "no cut (finished first)"
        out.append(
            RunResult(
                NAME,
                index,
                f"{case}; {hit}; first run {first.brief()[:120]}",
                outcome,
                detail,
                f"{repro} --case {index}",
            )
        )
    return out
