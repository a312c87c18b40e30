"""The reliability drills of bench/drills.py in a reduced form: a handful of runs each, against the
private sshd, every run required to converge with nothing corrupted and nothing lost.

The full drills (and docs/reliability.md) come from `uv run python bench/drills.py`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from drillkit import r1_cuts, r2_kills, r3_races, r4_hostile, r6_secrets, r7_fuzz, r8_scheduler  # noqa: E402
from drillkit.verdict import RunResult  # noqa: E402
from drillkit.world import World, world  # noqa: E402

try:
    from .services import SshdServer
except ImportError:  # pytest "prepend" import mode
    from services import SshdServer  # type: ignore[no-redef]

SEED = 8


@pytest.fixture(scope="module")
def drill_world(sshd_server: SshdServer) -> Iterator[World]:
    with world(sshd_server, small=True) as w:
        yield w


def _assert_converged(results: list[RunResult], expected: int) -> None:
    assert len(results) == expected
    bad = [
        f"{r.drill} #{r.index} {r.outcome}: {r.case}: {r.detail}" for r in results if r.outcome != "converged"
    ]
    assert bad == []


def _runs(module, w: World, indices: list[int], total: int) -> list[RunResult]:
    out: list[RunResult] = []
    for index in indices:
        out += module.run(w, SEED, total, only=index, repro="test")
    return out


def test_r1_connection_cuts_converge(drill_world: World) -> None:
    cuts = drill_world.proxy.cuts
    results = r1_cuts.run(drill_world, SEED, 2)  # one push, one pull
    _assert_converged(results, 2)
    assert [r.case.split()[0] for r in results] == ["push", "pull"]
    assert drill_world.proxy.cuts > cuts  # the proxy really dropped a connection


def test_r2_kill_during_push_apply_converges(drill_world: World) -> None:
    results = _runs(r2_kills, drill_world, [1, 3], 4)  # odd indices: push apply kills
    _assert_converged(results, 2)
    assert all(r.case.startswith("push: remote apply and client killed") for r in results)


def test_r3_racing_pushes_and_appender_converge(drill_world: World) -> None:
    results = r3_races.run(drill_world, SEED, 2)  # racing histories, then push vs appender
    _assert_converged(results, 2)
    assert "winner" in results[0].case and "import exit 0" in results[1].case


# Cases whose fixes are on main today; the rest of R4 joins when theirs land.
R4_GREEN = ["symlink aux", "FIFO", "name with a newline"]


def test_r4_hostile_links_fifos_and_odd_names_are_safe(drill_world: World) -> None:
    indices = [i for i, c in enumerate(r4_hostile.CASES) if any(c.name.startswith(g) for g in R4_GREEN)]
    results = _runs(r4_hostile, drill_world, indices, len(r4_hostile.CASES))
    _assert_converged(results, len(R4_GREEN))


def test_r6_secrets_in_the_environment_of_a_push_are_never_written(drill_world: World) -> None:
    indices = [
        i
        for i, ((channel, _a, _l), _s) in enumerate(r6_secrets.CASES)
        if channel.startswith("env of usr push")
    ]
    results = _runs(r6_secrets, drill_world, indices[:2], len(r6_secrets.CASES))
    _assert_converged(results, 2)


def test_r7_fuzzed_inputs_never_crash_and_failures_change_nothing(drill_world: World) -> None:
    results = r7_fuzz.run(drill_world, SEED, 20)  # 1-3 hypothesis examples per target
    _assert_converged(results, 20)
    assert {r.case.split(" example")[0] for r in results} == {t[0] for t in r7_fuzz.TARGETS}


def test_r8_transient_sbatch_failure_converges(drill_world: World, slurm) -> None:
    index = next(
        i
        for i in range(6)
        if r8_scheduler.SCHEDULERS[i % 2] == "slurm" and r8_scheduler.FAULTS[(i // 2) % 3] == "transient"
    )
    results = r8_scheduler.run(drill_world, SEED, 6, only=index, repro="test")
    _assert_converged(results, 1)
    assert "sbatch fails once" in results[0].case and "loop completed" in results[0].case
