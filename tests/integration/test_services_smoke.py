"""Smoke tests: the real services behave the way the project relies on.

sshd: key login, strict host key checking, the sftp subsystem.
SGE: -hold_jid ordering, qacct exit status, exit 100 -> Eqw keeps dependents held.
Slurm: --dependency=afterok ordering, exit codes from `sacct -c`.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conftest import SchedulerHost
    from services import SshdServer

JOB_TIMEOUT = 60.0


def run(argv: list[str], timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, check=check
    )


def wait_for(
    what: str, done: Callable[[], bool], timeout: float = JOB_TIMEOUT, interval: float = 0.3
) -> None:
    """Poll ``done`` until it returns True; fail the test after ``timeout`` s."""
    # A bool predicate, not a generic "return the value" helper: PEP 695 generics (what ruff's
    # UP047 wants for py312) would not import on the system Python 3.11 that can run these tests.
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def write_script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/bash\nset -eu\n" + body)
    path.chmod(0o755)
    return path


# Each job records when it started/ended (epoch seconds, ns resolution) into $OUT.
STAMP_FIRST = 'date +%s.%N > "$OUT/first.start"\nsleep 2\ndate +%s.%N > "$OUT/first.end"\n'
STAMP_SECOND = 'date +%s.%N > "$OUT/second.start"\n'


def stamp(out: Path, name: str) -> float:
    return float((out / name).read_text())


# --- sshd ----------------------------------------------------------------------------------------


def test_ssh_runs_a_command(sshd_server: SshdServer) -> None:
    res = run([*sshd_server.ssh_argv(), "echo ok"])
    assert res.stdout == "ok\n"


def test_unknown_host_key_is_refused(sshd_server: SshdServer, tmp_path: Path) -> None:
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    # Command-line -o wins over the config file, so only the known hosts file changes.
    argv = ["ssh", *sshd_server.ssh_options(), "-o", f"UserKnownHostsFile={empty}"]
    argv += ["-o", "StrictHostKeyChecking=yes", sshd_server.alias, "echo should-not-run"]
    res = run(argv, check=False)
    assert res.returncode == 255
    assert "should-not-run" not in res.stdout
    assert "Host key verification failed" in res.stderr
    assert empty.read_text() == ""  # strict mode must not learn the key either


def test_sftp_put_get_roundtrip(sshd_server: SshdServer, tmp_path: Path) -> None:
    payload = os.urandom(1024 * 1024 + 7)
    local = tmp_path / "local.bin"
    local.write_bytes(payload)
    remote = tmp_path / "remote" / "copy.bin"
    remote.parent.mkdir()
    back = tmp_path / "back.bin"
    batch = tmp_path / "batch"
    batch.write_text(f"pwd\nput {local} {remote}\nget {remote} {back}\n")
    run(["sftp", *sshd_server.ssh_options(), "-b", str(batch), sshd_server.alias])
    assert remote.read_bytes() == payload
    assert back.read_bytes() == payload


# --- SGE -----------------------------------------------------------------------------------------


def qsub(script: Path, *args: str) -> str:
    # -o next to the script: job logs must never land in the current directory (the checkout)
    res = run(
        [
            "qsub",
            "-terse",
            "-S",
            "/bin/bash",
            "-b",
            "n",
            "-cwd",
            "-j",
            "y",
            "-o",
            str(script.parent),
            *args,
            str(script),
        ]
    )
    return res.stdout.strip()


def qacct_exit_status(job_id: str, name: str) -> int | None:
    """exit_status of the job's last accounting record, or None while it has none.

    Matches id AND name: a reset spool restarts job ids while the accounting file keeps records.
    """
    res = run(["qacct", "-j", job_id], check=False)
    if res.returncode != 0:
        return None
    status, jobname = None, None
    for line in res.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "jobname":
            jobname = fields[1]
        elif len(fields) >= 2 and fields[0] == "exit_status" and jobname == name:
            status = int(fields[1])
    return status


def qstat_states() -> dict[str, str]:
    """job id -> state (e.g. qw, hqw, r, Eqw) of the jobs SGE still holds."""
    res = run(["qstat", "-u", "*"])
    states = {}
    for line in res.stdout.splitlines()[2:]:  # two header lines
        fields = line.split()
        if len(fields) >= 5:
            states[fields[0]] = fields[4]
    return states


def unique(prefix: str) -> str:
    """A job name no earlier run used (the accounting lookups match id AND name)."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_sge_hold_jid_chain_runs_in_order(sge: SchedulerHost, tmp_path: Path) -> None:
    first_name, second_name = unique("smoke-first"), unique("smoke-second")
    env = ("-v", f"OUT={tmp_path}")
    first = qsub(write_script(tmp_path / "first.sh", STAMP_FIRST), "-N", first_name, *env, "-P", "usrbatch")
    second = qsub(
        write_script(tmp_path / "second.sh", STAMP_SECOND), "-N", second_name, *env, "-hold_jid", first
    )

    wait_for(f"qacct record of {second}", lambda: qacct_exit_status(second, second_name) is not None)
    assert qacct_exit_status(first, first_name) == 0
    assert qacct_exit_status(second, second_name) == 0
    assert stamp(tmp_path, "second.start") >= stamp(tmp_path, "first.end")
    assert stamp(tmp_path, "first.end") - stamp(tmp_path, "first.start") >= 1.5


def test_sge_exit_100_leaves_dependents_held(sge: SchedulerHost, tmp_path: Path) -> None:
    env = ("-v", f"OUT={tmp_path}")
    failing = qsub(write_script(tmp_path / "fail.sh", "exit 100\n"), "-N", unique("smoke-exit100"), *env)
    dependent = qsub(
        write_script(tmp_path / "second.sh", STAMP_SECOND),
        "-N",
        unique("smoke-held"),
        *env,
        "-hold_jid",
        failing,
    )
    try:
        wait_for(f"{failing} in Eqw", lambda: qstat_states().get(failing) == "Eqw")
        # Give the scheduler (1 s interval) several chances to (wrongly) release the dependent.
        time.sleep(4)
        states = qstat_states()
        assert states.get(failing) == "Eqw"
        assert states.get(dependent) == "hqw"
        assert not (tmp_path / "second.start").exists()
    finally:
        # Dependent first: deleting the Eqw job alone would release it.
        run(["qdel", dependent], check=False)
        run(["qdel", failing], check=False)
    wait_for("both jobs gone", lambda: not {failing, dependent} & set(qstat_states()))
    assert not (tmp_path / "second.start").exists()


def test_sge_accepts_bu_scc_requests(sge: SchedulerHost, tmp_path: Path) -> None:
    """The requests BU SCC templates carry schedule here (see scripts/sge-up)."""
    name = unique("smoke-scc")
    job = qsub(
        write_script(tmp_path / "scc.sh", 'echo "$NSLOTS" > "$OUT/nslots"\n'),
        *("-N", name, "-v", f"OUT={tmp_path}", "-P", "usrbatch", "-pe", "omp", "2"),
        *("-l", "h_rt=00:10:00", "-l", "mem_per_core=4G", "-l", "download"),
    )
    wait_for(f"qacct record of {job}", lambda: qacct_exit_status(job, name) is not None)
    assert qacct_exit_status(job, name) == 0
    assert (tmp_path / "nslots").read_text().strip() == "2"


# --- Slurm ---------------------------------------------------------------------------------------


def sbatch(script: Path, *args: str) -> str:
    res = run(["sbatch", "--parsable", *args, str(script)])
    return res.stdout.strip().split(";")[0]  # --parsable prints ID[;CLUSTER]


def sacct_state(job_id: str, name: str) -> tuple[str, str] | None:
    """(State, ExitCode) from the jobcomp file (`sacct -c`), or None while the job has no record.

    Matches id AND name: after a state reset Slurm reuses ids, and the jobcomp file keeps the old
    records.
    """
    res = run(["sacct", "-c", "-P", "-n", "-o", "JobID,JobName,State,ExitCode", "-j", job_id], check=False)
    rows = [line.split("|") for line in res.stdout.splitlines() if line.startswith(f"{job_id}|{name}|")]
    return (rows[-1][2], rows[-1][3]) if rows else None


def test_slurm_afterok_chain_runs_in_order(slurm: SchedulerHost, tmp_path: Path) -> None:
    first_name, second_name = unique("smoke-first"), unique("smoke-second")
    common = [f"--export=ALL,OUT={tmp_path}", f"--output={tmp_path}/%j.log"]
    first = sbatch(write_script(tmp_path / "first.sh", STAMP_FIRST), "-J", first_name, *common)
    second = sbatch(
        write_script(tmp_path / "second.sh", STAMP_SECOND),
        *("-J", second_name, *common, f"--dependency=afterok:{first}"),
    )

    wait_for(f"sacct record of {second}", lambda: sacct_state(second, second_name) is not None)
    assert sacct_state(second, second_name) == ("COMPLETED", "0:0")
    assert sacct_state(first, first_name) == ("COMPLETED", "0:0")
    assert stamp(tmp_path, "second.start") >= stamp(tmp_path, "first.end")
    assert stamp(tmp_path, "first.end") - stamp(tmp_path, "first.start") >= 1.5
