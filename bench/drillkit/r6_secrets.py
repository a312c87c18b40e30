"""R6 secrets, by value and by key (issue 8 point 8): a token-shaped value given in an argument,
a note or the environment must not appear in any text the tool writes (.events.log, meta.md, the
audit logs, rendered job scripts, loop state); loop scripts and state are not world-readable.

Every case runs real commands in a fresh run dir, then scans every file the tool wrote there
(parquet data and the drill's own input files excepted) and the JSON-lines audit log.
  converged  the secret appears nowhere (and, for loops, nothing is world-readable)
  failed     it leaked (the files are named), or a command crashed or failed
"""

from __future__ import annotations

import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import datasets
from .verdict import RunResult
from .world import DS, NAMESPACE, CliRun, World

NAME = "R6"
TITLE = "secrets by key and by value (events, meta.md, audit, job scripts)"


@dataclass(frozen=True)
class Secret:
    name: str
    value: str  # what the user typed
    needle: str  # the part that must never be written


SECRETS = [
    Secret(
        "GitHub token",
        "ghp_" + "Dr1llT0kenValue0123456789abcdefABCDE",
        "Dr1llT0kenValue0123456789abcdefABCDE",
    ),
    Secret(
        "Bearer JWT",
        "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJkcmlsbCJ9.c2lnbmF0dXJlLWRyaWxs",
        "c2lnbmF0dXJlLWRyaWxs",
    ),
    Secret("password=", "password=Hunter2-drill-pw", "Hunter2-drill-pw"),
    Secret("URL credentials", "https://drill:S3cr3tDrillPw@example.org/data.csv", "S3cr3tDrillPw"),
    Secret("AWS key id", "AKIAIOSFODNN7DRILL01", "AKIAIOSFODNN7DRILL01"),
    Secret("Slack token", "xoxb-123456789012-1234567890123-DrillSlackTokenValue", "DrillSlackTokenValue"),
    Secret("OpenAI key", "sk-proj-DrillOpenAIKeyValue0123456789", "DrillOpenAIKeyValue0123456789"),
]


def _init_notes(w: World, run: Path, s: Secret) -> list[CliRun]:
    return [w.usr(run / "local", "init", "secret/init", "--notes", f"token for the lab: {s.value}")]


def _import_source(w: World, run: Path, s: Secret) -> list[CliRun]:
    local = run / "local"
    datasets.place(w, "base", local)
    csv = datasets.write_import_csv(run / "inputs" / "i.csv", ["ACGTACGTAC", "TTTTGGGGCC"])
    return [w.usr(local, "import", DS, "--from", "csv", "--path", str(csv), "--source", s.value)]


def _attach_note(w: World, run: Path, s: Secret) -> list[CliRun]:
    local = run / "local"
    datasets.place(w, "base", local)
    seqs = (w.tmp / "template" / "i1.csv").read_text().split()[1:4]
    csv = run / "inputs" / "a.csv"
    csv.write_text("sequence,rank\n" + "".join(f"{q},0.5\n" for q in seqs))
    return [
        w.usr(
            local,
            "attach",
            DS,
            "--path",
            str(csv),
            "--namespace",
            NAMESPACE,
            "--key",
            "sequence",
            "--note",
            f"usr attach ... --api-key {s.value}",
        )
    ]


def _sync_env(w: World, run: Path, s: Secret) -> list[CliRun]:
    """Secrets in the environment of a push, by key (API_TOKEN) and by value (LAB_SETTING)."""
    local = run / "local"
    datasets.place(w, "ahead", local)
    env = {"API_TOKEN": s.value, "LAB_SETTING": s.value}
    return [w.usr(local, "push", DS, "hpc", "-y", env=env)]


def _loop(w: World, run: Path, s: Secret, *, in_command: bool) -> list[CliRun]:
    local = run / "local"
    datasets.place(w, "base", local)
    command = "true" if not in_command else f"echo configured >/dev/null # {s.value}"
    spec = {
        "name": "secret-loop",
        "dataset": DS,
        "root": str(local),
        "remote": "shared",
        "remotes_config": str(w.remotes),
        "scheduler": "local",
        "iterations": 1,
        "resources": {"time": "00:05:00"},
        "steps": [{"kind": "shell", "name": "work", "command": command}],
    }
    path = run / "inputs" / "loop.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    env = {"GITHUB_TOKEN": s.value, "LAB_SETTING": s.value, "DB_PASSWORD": s.value}
    return [w.usrbatch("submit-loop", str(path), "--wait", "120", env=env)]


CHANNELS: list[tuple[str, Callable[[World, Path, Secret], list[CliRun]], bool]] = [
    ("usr init --notes", _init_notes, False),
    ("usr import --source", _import_source, False),
    ("usr attach --note", _attach_note, False),
    ("env of usr push (API_TOKEN, LAB_SETTING)", _sync_env, False),
    (
        "env of usrbatch submit-loop (GITHUB_TOKEN, LAB_SETTING, DB_PASSWORD)",
        lambda w, r, s: _loop(w, r, s, in_command=False),
        True,
    ),
    ("loop shell step command (audit and state only)", lambda w, r, s: _loop(w, r, s, in_command=True), True),
]
CASES = [(c, s) for c in CHANNELS for s in SECRETS]
DEFAULT_RUNS = len(CASES)


def _leaks(w: World, run: Path, needle: str, *, scripts_may_hold: bool) -> list[str]:
    out = []
    candidates = [p for p in run.rglob("*") if p.is_file() and not p.is_symlink()]
    for path in [*candidates, w.audit_log]:
        rel = path.relative_to(run).as_posix() if path.is_relative_to(run) else path.name
        if rel.startswith("inputs/") or path.suffix == ".parquet":
            continue
        if (
            scripts_may_hold
            and path.suffix in (".sh", ".qsub", ".sbatch", ".slurm")
            or "/scripts/" in f"/{rel}"
        ):
            continue  # the user's own command must run: its script holds it
        try:
            if needle.encode() in path.read_bytes():
                out.append(rel)
        except OSError:
            continue
    return out


def _world_readable(run: Path) -> list[str]:
    """Rendered job scripts and loop state files that others may read (point 8 says: none)."""
    out = []
    for loop_root in (p for p in run.rglob("loops") if p.is_dir()):
        for path in [*loop_root.glob("*/scripts/*"), *loop_root.glob("*/state.json")]:
            if path.is_file() and path.stat().st_mode & stat.S_IROTH:
                out.append(path.relative_to(run).as_posix())
    return out


def run(w: World, seed: int, runs: int, only: int | None = None, repro: str = "") -> list[RunResult]:
    out = []
    for index in range(runs):
        if only is not None and index != only:
            continue
        (channel, action, is_loop), secret = CASES[index % len(CASES)]
        local, _remote = w.fresh(f"r6-{index}")
        rundir = local.parent
        (rundir / "inputs").mkdir()
        w.audit_log.write_text("")
        problems = []
        try:
            for cmd in action(w, rundir, secret):
                if cmd.crash:
                    problems.append(f"crashed: {cmd.crash.strip().splitlines()[-1][:200]}")
                elif not cmd.ok:
                    problems.append(f"the command failed: {cmd.brief()[:200]}")
            scripts_may_hold = channel.startswith("loop shell step")
            if leaked := _leaks(w, rundir, secret.needle, scripts_may_hold=scripts_may_hold):
                problems.append(f"the {secret.name} leaked into {leaked[:6]}")
            if is_loop and (readable := _world_readable(rundir)):
                problems.append(f"world-readable loop files: {readable[:4]}")
        except Exception as exc:  # noqa: BLE001 - a harness crash is a failed run, reported
            problems.append(f"harness error: {exc!r}")
        out.append(
            RunResult(
                NAME,
                index,
                f"{secret.name} via {channel}",
                "failed" if problems else "converged",
                "; ".join(problems),
                f"{repro} --case {index}",
            )
        )
    return out
