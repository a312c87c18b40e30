"""R5 trust: what OpenSSH refuses, usrbatch refuses too (issue 8 point 7), with the fix named and
never a traceback; what OpenSSH accepts still works.

Each case writes its own ssh_config (IdentityFile, UserKnownHostsFile) for the private sshd,
changes one mode or one known_hosts line, and runs `usr pull` (local `base`, remote `ahead`):
  refuse   expected: exit != 0 with an `ERROR:` naming `hint` (e.g. the chmod fix), the local
           dataset untouched, and `usr remotes doctor` reporting it too (no traceback)
  connect  expected: the pull converges (diff up-to-date, validate OK on both sides)
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from . import datasets
from .verdict import Ledger, RunResult, judge, tree
from .world import DS, REMOTE, World

NAME = "R5"
TITLE = "trust: key/config permissions, known_hosts markers"


@dataclass(frozen=True)
class Case:
    name: str
    expect: str  # "refuse" or "connect"
    hint: str = ""  # a word the refusal must contain (lower-cased match)
    key_mode: int = 0o600
    config_mode: int = 0o600
    remotes_mode: int = 0o600
    known: str = "plain"  # how known_hosts vouches for the server (see _known_hosts)


CASES = [
    Case("private key readable by others (0644)", "refuse", "chmod", key_mode=0o644),
    Case("private key readable by group (0640)", "refuse", "chmod", key_mode=0o640),
    Case("ssh config writable by others (0666)", "refuse", "chmod", config_mode=0o666),
    Case("ssh config writable by group (0660)", "refuse", "chmod", config_mode=0o660),
    Case("remotes.yaml writable by others (0666)", "refuse", "chmod", remotes_mode=0o666),
    Case("remotes.yaml writable by group (0620)", "refuse", "chmod", remotes_mode=0o620),
    Case("readable (0644) ssh config and remotes.yaml", "connect", config_mode=0o644, remotes_mode=0o644),
    Case("known_hosts holds another key for the host", "refuse", "changed", known="changed"),
    Case("@revoked line for the server's key", "refuse", "revoked", known="revoked"),
    Case("only a @cert-authority line", "refuse", "", known="ca-only"),
    Case("@cert-authority line beside the plain key", "connect", known="ca-and-plain"),
    Case("hashed known_hosts entry", "connect", known="hashed"),
    Case("host not in known_hosts", "refuse", "known_hosts", known="empty"),
]
DEFAULT_RUNS = len(CASES)


def _keygen(path: Path) -> str:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "drill", "-f", str(path)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return " ".join(path.with_suffix(".pub").read_text().split()[:2])


def _known_hosts(w: World, run: Path, how: str) -> Path:
    name = f"[{w.server.host}]:{w.server.port}"
    real = " ".join(w.server.host_key_pub.read_text().split()[:2])
    known = run / "known_hosts"
    lines = {
        "plain": lambda: [f"{name} {real}"],
        "empty": lambda: [],
        "changed": lambda: [f"{name} {_keygen(run / 'other_host_key')}"],
        "revoked": lambda: [f"@revoked {name} {real}", f"{name} {real}"],
        "ca-only": lambda: [f"@cert-authority {name} {_keygen(run / 'ca_key')}"],
        "ca-and-plain": lambda: [f"@cert-authority {name} {_keygen(run / 'ca_key')}", f"{name} {real}"],
        "hashed": lambda: [f"{name} {real}"],
    }[how]()
    known.write_text("".join(line + "\n" for line in lines))
    if how == "hashed":
        subprocess.run(["ssh-keygen", "-H", "-f", str(known)], check=True, capture_output=True, timeout=30)
        Path(str(known) + ".old").unlink(missing_ok=True)
    return known


def _ssh_config(w: World, run: Path, case: Case) -> Path:
    key = run / "client_key"
    key.write_bytes(Path(w.server.client_key).read_bytes())
    key.chmod(case.key_mode)
    known = _known_hosts(w, run, case.known)
    cfg = run / "ssh_config"
    cfg.write_text(
        f"Host {w.server.alias}\n    HostName {w.server.host}\n    Port {w.server.port}\n"
        f"    User {w.server.user}\n    IdentityFile {key}\n    IdentitiesOnly yes\n"
        f"    UserKnownHostsFile {known}\n    GlobalKnownHostsFile /dev/null\n"
        "    StrictHostKeyChecking yes\n    ConnectTimeout 10\n"
    )
    cfg.chmod(case.config_mode)
    return cfg


def _one(w: World, index: int, case: Case) -> tuple[str, str, str]:
    local, remote = w.fresh(f"r5-{index}")
    datasets.place(w, "base", local)
    datasets.place(w, "ahead", remote)
    ledger = Ledger()
    ledger.add(local / DS)
    ledger.add(remote / DS)
    env = {"USRBATCH_SSH_CONFIG": str(_ssh_config(w, local.parent, case))}
    before = tree(local / DS)
    w.remotes.chmod(case.remotes_mode)
    try:
        pull = w.usr(local, "pull", DS, REMOTE, "-y", env=env)
        doctor = w.usr(local, "remotes", "doctor", "--remote", REMOTE, env=env)
    finally:
        w.remotes.chmod(0o600)
    brief = pull.brief()[:200]
    problems = []
    for what, run in (("pull", pull), ("doctor", doctor)):
        if run.crash:
            problems.append(f"{what} crashed: {run.crash.strip().splitlines()[-1][:200]}")
    if case.expect == "connect":
        if not pull.ok:
            problems.append(f"the pull was refused: {brief}")
        outcome, detail = judge(w, ledger, local, remote, problems=problems, env=env)
        return brief, outcome, detail
    if pull.ok:
        problems.append("the pull connected and ran (expected: refused)")
    elif case.hint and case.hint not in pull.out.lower():
        problems.append(f"the refusal does not name '{case.hint}': {brief}")
    if doctor.ok or (case.hint and case.hint not in doctor.out.lower()):
        problems.append(f"`usr remotes doctor` does not report it: {doctor.brief()[:200]}")
    if tree(local / DS) != before and not pull.ok:
        problems.append("refused, but the local dataset changed")
    if problems:
        outcome, detail = judge(w, ledger, local, remote, problems=problems, env=env)
        if outcome == "converged":  # a refusal expected, a sync happened: still not the contract
            outcome = "failed"
        return brief, outcome, detail
    return brief, "converged", ""


def run(w: World, seed: int, runs: int, only: int | None = None, repro: str = "") -> list[RunResult]:
    out = []
    for index in range(runs):
        if only is not None and index != only:
            continue
        case = CASES[index % len(CASES)]
        try:
            brief, outcome, detail = _one(w, index, case)
        except Exception as exc:  # noqa: BLE001 - a harness crash is a failed run, reported
            brief, outcome, detail = "", "failed", f"harness error: {exc!r}"
        label = f"{case.name} (expect {case.expect}): {brief}"
        out.append(RunResult(NAME, index, label, outcome, detail, f"{repro} --case {index}"))
    return out
