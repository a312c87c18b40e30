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
    results = _runs(r2_kills, drill_world, [1], 4)  # odd indices: push apply kills
    _assert_converged(results, 1)
    assert all(r.case.startswith("push: remote apply and client killed") for r in results)


def test_r2_kill_during_pull_promotion_refuses_local_mutations_then_converges(drill_world: World) -> None:
    """Runs 2 and 6 die inside the promotion (after the journal), then try `usr attach` and
    `usr import`: both must be refused, and the next pull completes the promotion."""
    results = _runs(r2_kills, drill_world, [2, 6], 8)
    _assert_converged(results, 2)
    for r, kind in zip(results, ("attach", "import"), strict=True):
        assert f"local {kind} attempted while the promotion is pending" in r.case
        assert "has an interrupted pull" in r.case  # the refusal names the pending state


def test_r3_racing_pushes_and_appender_converge(drill_world: World) -> None:
    results = r3_races.run(drill_world, SEED, 2)  # racing histories, then push vs appender
    _assert_converged(results, 2)
    assert "winner" in results[0].case and "import exit 0" in results[1].case


R4_CASES = [  # the full set (links, FIFOs, odd names, ...) runs in bench/drills.py
    "planted promotion journal + interrupted pull",
    "junk bytes as records.parquet",
    "wrong-schema overlay part",
    "junk bytes as local records.parquet",
]


def test_r4_hostile_remote_and_junk_payloads_are_refused_or_synced_safely(drill_world: World) -> None:
    indices = [i for i, c in enumerate(r4_hostile.CASES) if c.name in R4_CASES]
    results = _runs(r4_hostile, drill_world, indices, len(r4_hostile.CASES))
    _assert_converged(results, len(R4_CASES))


R5_CASES = [
    "private key readable by others (0644)",
    "private key readable by group (0640)",
    "ssh config writable by others (0666)",
    "ssh config writable by group (0660)",
    "remotes.yaml writable by group (0620)",
    "@revoked line for the server's key",
    "only a @cert-authority line",
    "@cert-authority line beside the plain key",
]


def test_r5_trust_refuses_what_openssh_refuses(drill_world: World) -> None:
    indices = [i for i, c in enumerate(r5_trust.CASES) if c.name in R5_CASES]
    results = _runs(r5_trust, drill_world, indices, len(r5_trust.CASES))
    _assert_converged(results, len(R5_CASES))


R6_CASES = [
    ("usr init --notes", "GitHub token"),
    ("usr attach --note", "Bearer JWT"),
    ("env of usr push", "URL credentials"),
    ("env of usrbatch submit-loop", "password="),
    ("loop shell step command", "Slack token"),
]


def test_r6_secrets_are_never_written(drill_world: World) -> None:
    indices = [
        i
        for i, ((channel, _a, _l), secret) in enumerate(r6_secrets.CASES)
        if any(channel.startswith(c) and secret.name == s for c, s in R6_CASES)
    ]
    results = _runs(r6_secrets, drill_world, indices, len(r6_secrets.CASES))
    _assert_converged(results, len(R6_CASES))


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
