"""R2 kill -9 at random points of a pull's promotion and of a push's remote apply.

pull  a child `usr pull` dies at the K-th rename out of its staging dir (K random over every
      rename the promotion makes, the journal's own included). Then, in 2 of every 3 runs, a local
      mutation is attempted while the promotion is pending (`usr import`, or `usr attach`):
      expected refused (issue 8 point 2). Then `usr pull` is re-run until it succeeds.
push  a child `usr push` sends its remote apply; after a random 0-40 ms the newest python process
      under the sshd (the agent applying renames) is SIGKILLed and the client dies too. Then
      `usr push` is re-run until it succeeds.
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

from . import datasets
from .verdict import Ledger, RunResult, judge, settle, tree
from .world import DS, NAMESPACE, REMOTE, World

NAME = "R2"
TITLE = "kill -9 in pull promotion / push apply"
DEFAULT_RUNS = 60  # 30 pull + 30 push
CRASH = Path(__file__).resolve().parent / "crash_usr.py"
MUTATIONS = ("import", "attach", None)


def crash_child(w: World, root: Path, mode: str, arg: str, *args: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, str(CRASH), mode, arg, "--", *w.usr_argv(root, *args)[1:]]
    return subprocess.run(
        argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300, env=w.child_env()
    )


def sshd_pid(w: World) -> int:
    return int((Path(w.server.workdir) / "sshd.pid").read_text().split()[0])


def _promotion_renames(w: World) -> int:
    """Renames a base → ahead pull promotion makes (files to install, journal excluded)."""
    base = tree(w.tmp / "template" / "base" / DS)
    ahead = tree(w.tmp / "template" / "ahead" / DS)
    return sum(1 for rel, sha in ahead.items() if base.get(rel) != sha)


def _mutate(w: World, local: Path, kind: str, rng: random.Random, tag: str):
    seqs = datasets.random_sequences(rng, 5, 50)
    if kind == "import":
        path = datasets.write_import_csv(w.tmp / f"r2-{tag}.csv", seqs)
        return w.usr(local, "import", DS, "--from", "csv", "--path", str(path))
    # attach scores to rows that exist in every version (the base rows)
    existing = (w.tmp / "template" / "i1.csv").read_text().split()[1:6]
    path = datasets.write_attach_csv(w.tmp / f"r2-{tag}.csv", existing, rng, "rank")
    return w.usr(
        local,
        "attach",
        DS,
        "--path",
        str(path),
        "--namespace",
        NAMESPACE,
        "--key",
        "sequence",
        "--allow-overwrite",
    )


def _pull_run(w: World, index: int, rng: random.Random, renames: int) -> tuple[str, str, str]:
    local, remote = w.fresh(f"r2-pull-{index}")
    datasets.place(w, "base", local)
    datasets.place(w, "ahead", remote)
    ledger = Ledger()
    ledger.add(local / DS)
    ledger.add(remote / DS)
    k = rng.randrange(0, renames + 1)
    kind = MUTATIONS[(index // 2) % len(MUTATIONS)]
    case = f"pull killed at rename {k} of {renames} (0 = the journal)"
    child = crash_child(w, local, "pull-promotion", str(k), "pull", DS, REMOTE, "-y")
    problems = []
    if child.returncode != 137:
        case += f" (the pull finished first: exit {child.returncode})"
    pending = child.returncode == 137 and k > 0  # k=0 died before the journal existed
    if kind is not None and pending:
        case += f"; local {kind} attempted while the promotion is pending"
        before = tree(local / DS)
        mut = _mutate(w, local, kind, rng, f"{index}")
        if mut.crash:
            problems.append(f"`usr {kind}` during a pending promotion crashed")
        elif mut.ok:
            problems.append(f"`usr {kind}` was accepted while a promotion was pending (expected: refused)")
            ledger.add(local / DS)  # its rows and event are committed data now
        elif not mut.ok and tree(local / DS) != before:
            problems.append(f"the refused `usr {kind}` changed the local dataset")
        case += f"; {kind}: {mut.brief()[:140]}"
    _last, more = settle(w, local, ["pull", DS, REMOTE, "-y"])
    problems += more
    outcome, detail = judge(w, ledger, local, remote, problems=problems)
    return case, outcome, detail


def _push_run(w: World, index: int, rng: random.Random) -> tuple[str, str, str]:
    local, remote = w.fresh(f"r2-push-{index}")
    datasets.place(w, "ahead", local)
    datasets.place(w, "base", remote)
    ledger = Ledger()
    ledger.add(local / DS)
    ledger.add(remote / DS)
    ms = rng.randrange(0, 41)
    child = crash_child(w, local, "push-apply", f"{ms}:{sshd_pid(w)}", "push", DS, REMOTE, "-y")
    case = f"push: remote apply and client killed {ms} ms after the apply was sent"
    if child.returncode != 137:
        case += f" (the push finished first: exit {child.returncode})"
    _last, problems = settle(w, local, ["push", DS, REMOTE, "-y"])
    outcome, detail = judge(w, ledger, local, remote, problems=problems)
    return case, outcome, detail


def run(w: World, seed: int, runs: int, only: int | None = None, repro: str = "") -> list[RunResult]:
    renames = _promotion_renames(w)
    out = []
    for index in range(runs):
        if only is not None and index != only:
            continue
        rng = random.Random(f"{seed}-{NAME}-{index}")
        if index % 2 == 0:
            case, outcome, detail = _pull_run(w, index, rng, renames)
        else:
            case, outcome, detail = _push_run(w, index, rng)
        out.append(RunResult(NAME, index, case, outcome, detail, f"{repro} --case {index}"))
    return out
