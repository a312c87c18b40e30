"""R3 concurrency, with real processes racing on one remote dataset over the real sshd.

histories  two clones A and B of `base`, each with its own local import (different histories),
           push at the same moment. Expected: the remote ends equal to exactly one of them, whose
           `usr diff` is up-to-date; the other push (run again afterwards) is refused cleanly with
           the event-history error and its clone is untouched.
appender   `usr push` of `ahead` races a local `usr import` into the same dataset. Expected: both
           succeed (the import waits for the event lock or lands first), and re-running the push
           brings both sides to the same state, the appended rows included.
"""

from __future__ import annotations

import random
import subprocess
import time

from . import datasets
from .verdict import Ledger, RunResult, SideState, foreign_files, judge, lost_units, settle, tree, validate
from .world import DS, REMOTE, CliRun, World

NAME = "R3"
TITLE = "concurrency: racing pushes, push vs local appender"
DEFAULT_RUNS = 20


def _start(w: World, root, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        w.usr_argv(root, *args),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=w.child_env(),
    )


def _finish(proc: subprocess.Popen) -> CliRun:
    out, _ = proc.communicate(timeout=300)
    crash = out if "Traceback (most recent call last)" in out else None
    return CliRun(tuple(proc.args), proc.returncode, out, crash)


def _import(w: World, root, rng: random.Random, tag: str) -> list[str]:
    path = datasets.write_import_csv(w.tmp / f"r3-{tag}.csv", datasets.random_sequences(rng, 10, 50))
    return ["import", DS, "--from", "csv", "--path", str(path)]


def _histories(w: World, index: int, rng: random.Random) -> tuple[str, str, str]:
    a, remote = w.fresh(f"r3-hist-{index}")
    b = a.parent / "clone-b"
    b.mkdir()
    (b / "registry.yaml").write_bytes((a / "registry.yaml").read_bytes())
    for root in (a, b):
        datasets.place(w, "base", root)
    datasets.place(w, "base", remote)
    for tag, root in (("a", a), ("b", b)):
        run = w.usr(root, *_import(w, root, rng, f"{index}{tag}"))
        if not run.ok:
            raise RuntimeError(f"R3 set-up import failed: {run.brief()}")
    ledger = Ledger()
    for root in (a, b, remote):
        ledger.add(root / DS)
    before = {"A": tree(a / DS), "B": tree(b / DS)}
    delay = rng.uniform(0, 0.3)
    pa = _start(w, a, "push", DS, REMOTE, "-y")
    time.sleep(delay)
    pb = _start(w, b, "push", DS, REMOTE, "-y")
    first = {"A": _finish(pa), "B": _finish(pb)}
    case = f"A and B push different histories, B {delay * 1000:.0f} ms later: " + ", ".join(
        f"{k} exit {r.code}" for k, r in first.items()
    )
    problems = [f"push {k} crashed" for k, r in first.items() if r.crash]
    # each pusher tries once more, in turn
    again = {"A": w.usr(a, "push", DS, REMOTE, "-y"), "B": w.usr(b, "push", DS, REMOTE, "-y")}
    problems += [f"second push {k} crashed" for k, r in again.items() if r.crash]
    after = {"A": SideState.of(a / DS), "B": SideState.of(b / DS), "remote": SideState.of(remote / DS)}
    if lost := lost_units(ledger, list(after.values())):
        return case, "lost", "; ".join(lost)
    corrupt = []
    for name, root in (("A", a), ("B", b), ("remote", remote)):
        if not validate(w, root).ok:
            corrupt.append(f"{name} fails validate")
        if foreign := foreign_files(ledger, after[name]):
            corrupt.append(f"{name} holds files matching no legitimate version: {foreign[:5]}")
    winners = [k for k in ("A", "B") if after[k].files == after["remote"].files]
    if not winners:
        corrupt.append("the remote equals neither A nor B (a mix of both histories)")
    if corrupt:
        return case, "corrupted", "; ".join(corrupt + problems)
    winner = winners[0]
    loser = "B" if winner == "A" else "A"
    if after[loser].files != before[loser]:
        problems.append(f"the losing clone {loser} was changed")
    if again[loser].ok or "prefix" not in again[loser].out:
        problems.append(
            f"the losing push {loser} was not refused with the history error: {again[loser].brief()}"
        )
    root = a if winner == "A" else b
    diff = w.usr(root, "diff", DS, REMOTE)
    if "Status     : up-to-date" not in diff.out.splitlines():
        problems.append(f"the winner {winner} is not up-to-date: {diff.brief()}")
    case += f"; winner {winner}"
    return case, ("failed" if problems else "converged"), "; ".join(problems)


def _appender(w: World, index: int, rng: random.Random) -> tuple[str, str, str]:
    local, remote = w.fresh(f"r3-append-{index}")
    datasets.place(w, "ahead", local)
    datasets.place(w, "base", remote)
    ledger = Ledger()
    ledger.add(local / DS)
    ledger.add(remote / DS)
    delay = rng.uniform(0, 1.2)
    push = _start(w, local, "push", DS, REMOTE, "-y")
    time.sleep(delay)
    imp = _start(w, local, *_import(w, local, rng, f"{index}"))
    res_push, res_imp = _finish(push), _finish(imp)
    case = f"push races a local import started {delay * 1000:.0f} ms later: push exit {res_push.code}, import exit {res_imp.code}"
    problems = [f"{n} crashed" for n, r in (("push", res_push), ("import", res_imp)) if r.crash]
    if not res_imp.ok:
        problems.append(f"the local import failed: {res_imp.brief()}")
    ledger.add(local / DS)  # the appended rows are committed data
    _last, more = settle(w, local, ["push", DS, REMOTE, "-y"])
    outcome, detail = judge(w, ledger, local, remote, problems=problems + more)
    return case, outcome, detail


def run(w: World, seed: int, runs: int, only: int | None = None, repro: str = "") -> list[RunResult]:
    out = []
    for index in range(runs):
        if only is not None and index != only:
            continue
        rng = random.Random(f"{seed}-{NAME}-{index}")
        fn = _histories if index % 2 == 0 else _appender
        case, outcome, detail = fn(w, index, rng)
        out.append(RunResult(NAME, index, case, outcome, detail, f"{repro} --case {index}"))
    return out
