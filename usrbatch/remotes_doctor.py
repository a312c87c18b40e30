"""`usr remotes doctor`: check a remote step by step, in order, stopping at the first failure.

SSH: config valid → file permissions (OpenSSH's rules for remotes.yaml, the ssh config and the
private keys) → TCP reachable → host key trusted → authentication → remote `sh` runs → flock →
sha256sum/shasum → python3 → pyarrow (warning only) → base_dir exists and is writable.
Local: config → permissions (remotes.yaml) → base_dir exists and is writable → flock works. Each
passed check is reported through `emit` as it happens; a failure raises a UsrError with ONE
actionable message (exit 2). The permissions check first emits one FAILED line per bad file, each
with its chmod fix.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from usrbatch.errors import RemoteConfigError, RemoteUnavailableError
from usrbatch.remotes import RemoteConfig
from usrbatch.remotes_trust import TrustProblem, config_file_problem, private_key_problem

MIN_PYTHON = (3, 6)


@dataclass(frozen=True)
class DoctorCheck:
    """One check: `name: ok (detail)`; `warning` marks an optional feature missing, `failed` a
    failed check reported before the error (permissions: one line per file)."""

    name: str
    detail: str = ""
    warning: bool = False
    failed: bool = False

    def render(self) -> str:
        status = "FAILED" if self.failed else "WARNING" if self.warning else "ok"
        return f"{self.name}: {status}" + (f" ({self.detail})" if self.detail else "")


Emit = Callable[[DoctorCheck], None]

# One exec answers every remote check; user data ($1 = base_dir) only as a quoted argument.
_PROBE_SH = "; ".join(
    [
        "echo sh=ok",
        "if command -v flock >/dev/null 2>&1; then echo flock=yes; else echo flock=no; fi",
        "if command -v sha256sum >/dev/null 2>&1; then echo sha=sha256sum; "
        "elif command -v shasum >/dev/null 2>&1; then echo sha=shasum; else echo sha=none; fi",
        "if command -v python3 >/dev/null 2>&1; then "
        "echo python3=$(python3 -c 'import sys; print(\"%d.%d.%d\" % sys.version_info[:3])' 2>/dev/null); "
        "python3 -c 'import pyarrow; print(\"pyarrow=\" + pyarrow.__version__)' 2>/dev/null || echo pyarrow=no; "
        "else echo python3=no; fi",
        'b=$1; case $b in "~") b=$HOME;; "~/"*) b=$HOME/${b#"~/"};; esac',
        'if [ "$2" = 1 ]; then if [ -d "$b" ]; then echo base=dir; t="$b/.usrbatch-tmp-doctor-$$"; '
        'if ( : > "$t" ) 2>/dev/null; then rm -f "$t"; echo base_w=yes; else echo base_w=no; fi; '
        "else echo base=missing; fi; fi",
        "echo end=ok",
    ]
)


def run_doctor(
    remote: RemoteConfig,
    *,
    check_base_dir: bool = True,
    emit: Emit | None = None,
    ssh_config_path: Path | None = None,
    known_hosts: Path | None = None,
    connect_timeout: float = 10.0,
    remotes_file: Path | None = None,
) -> list[DoctorCheck]:
    """Run every check in order; returns the passed checks, raises at the first failure.
    `remotes_file`: the remotes.yaml the remote came from (its permissions are checked)."""
    passed: list[DoctorCheck] = []

    def ok(check: DoctorCheck) -> None:
        if not check.failed:
            passed.append(check)
        if emit:
            emit(check)

    if remote.type == "local":
        _doctor_local(remote, ok, remotes_file)
    else:
        _doctor_ssh(remote, ok, check_base_dir, ssh_config_path, known_hosts, connect_timeout, remotes_file)
    return passed


def _check_permissions(ok: Emit, problems: list[TrustProblem | None], checked: str) -> None:
    found = [p for p in problems if p is not None]
    if not found:
        ok(DoctorCheck("permissions", checked))
        return
    for problem in found:
        ok(DoctorCheck("permissions", problem.message(), failed=True))
    raise RemoteConfigError(
        f"{len(found)} file(s) fail OpenSSH's owner/permission rules: "
        + "; ".join(f"{p.what} {p.path}" for p in found)
        + ".",
        hint="Fix with: " + " && ".join(p.fix for p in found),
    )


def _doctor_local(remote: RemoteConfig, ok: Emit, remotes_file: Path | None) -> None:
    ok(DoctorCheck("config", f"local base_dir={remote.base_dir}"))
    if remotes_file is not None:
        _check_permissions(ok, [config_file_problem(remotes_file, "remotes.yaml")], "remotes.yaml")
    base = Path(remote.base_dir).expanduser()
    if not base.is_dir():
        raise RemoteUnavailableError(
            f"Local base_dir does not exist: {base}", hint=f"Create it with: mkdir -p '{base}'"
        )
    try:
        fd, tmp = tempfile.mkstemp(prefix=".usrbatch-tmp-doctor-", dir=base)
    except OSError as exc:
        raise RemoteUnavailableError(f"Local base_dir is not writable: {base} ({exc.strerror}).") from exc
    try:
        ok(DoctorCheck("base_dir", f"{base} exists, writable"))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError as exc:
            raise RemoteUnavailableError(
                f"flock does not work on {base} ({exc.strerror}); dataset locks need a filesystem with flock "
                "support (on NFS, ask for local_lock=flock or use another directory)."
            ) from exc
        ok(DoctorCheck("flock", "fcntl.flock on a file in base_dir"))
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _doctor_ssh(
    remote: RemoteConfig,
    ok: Emit,
    check_base_dir: bool,
    ssh_config_path: Path | None,
    known_hosts: Path | None,
    connect_timeout: float,
    remotes_file: Path | None,
) -> None:
    from usrbatch.transport.ssh import SshTransport
    from usrbatch.transport.ssh_config import default_config_path, fingerprint, resolve_endpoint
    from usrbatch.transport.ssh_connect import (
        Connection,
        authenticate,
        open_connection,
        start_transport,
        tcp_connect,
    )

    endpoint = resolve_endpoint(
        remote, ssh_config_path=ssh_config_path, known_hosts=known_hosts, check_permissions=False
    )
    via = f", ssh_config={endpoint.config_path}" if endpoint.config_path else ""
    ok(DoctorCheck("config", f"{endpoint.user}@{endpoint.hostname}:{endpoint.port}{via}"))
    ssh_cfg = endpoint.config_path or default_config_path()
    keys = [p for p in endpoint.identity_files if p.is_file()]
    _check_permissions(
        ok,
        [
            config_file_problem(remotes_file, "remotes.yaml") if remotes_file else None,
            config_file_problem(ssh_cfg, "ssh config") if ssh_cfg else None,
            *(private_key_problem(p) for p in keys),
        ],
        f"remotes.yaml, {'ssh config, ' if ssh_cfg else ''}{len(keys)} key file(s)",
    )
    timeout = endpoint.connect_timeout or connect_timeout
    if endpoint.proxy_jump or endpoint.proxy_command:
        conn = open_connection(endpoint, connect_timeout=timeout, batch_mode=remote.batch_mode)
        how = f"ProxyJump {endpoint.proxy_jump}" if endpoint.proxy_jump else "ProxyCommand"
        ok(DoctorCheck("tcp", f"via {how}"))
        ok(DoctorCheck("host key", "trusted"))
        ok(DoctorCheck("auth", conn.auth_method))
    else:
        sock = tcp_connect(endpoint.hostname, endpoint.port, timeout)
        ok(DoctorCheck("tcp", f"{endpoint.hostname}:{endpoint.port}"))
        t, hostkeys = start_transport(sock, endpoint, timeout)
        try:
            key = t.get_remote_server_key()
            hostkeys.verify(endpoint, key)
            ok(DoctorCheck("host key", f"{key.get_name()} {fingerprint(key)}"))
            method = authenticate(t, endpoint, remote.batch_mode)
            ok(DoctorCheck("auth", method))
        except BaseException:
            t.close()
            raise
        conn = Connection(transport=t, endpoint=endpoint, auth_method=method)
    transport = SshTransport(remote, ssh_config_path=ssh_config_path, known_hosts=known_hosts, retries=1)
    transport.adopt(conn)
    try:
        rc, text = transport.run_sh(_PROBE_SH, remote.base_dir, "1" if check_base_dir else "0")
    finally:
        transport.close()
    facts = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    target = endpoint.target
    if facts.get("sh") != "ok" or facts.get("end") != "ok":
        raise RemoteUnavailableError(
            f"Remote shell on {target} did not run the probe (exit {rc}).",
            hint="Check that `sh` exists and your remote login files print nothing and do not exit.",
        )
    ok(DoctorCheck("remote sh", "sh -c runs"))
    if facts.get("flock") != "yes":
        raise RemoteUnavailableError(
            f"Remote flock is unavailable on {target}; dataset leases need it.",
            hint="Install util-linux (flock) on the remote or ask the admins.",
        )
    ok(DoctorCheck("flock", "found"))
    sha = facts.get("sha", "none")
    if sha == "none":
        raise RemoteUnavailableError(
            f"Remote sha256 is unavailable on {target} (neither sha256sum nor shasum on PATH).",
            hint="Install coreutils (sha256sum) or perl's shasum on the remote.",
        )
    ok(DoctorCheck("sha256", sha))
    py = facts.get("python3", "no")
    version = tuple(int(x) for x in py.split(".")[:2]) if py not in ("no", "") else ()
    if not version or version < MIN_PYTHON:
        found = "not on PATH" if not version else f"found {py}"
        raise RemoteUnavailableError(
            f"Remote python3 >= 3.6 is required on {target} ({found}): the one-round-trip agent runs "
            "inventories, renames and leases. Without it only inventories work (slower sh+find fallback).",
            hint="Load a python3 module in your remote ~/.bashrc (e.g. `module load python3`) or install python3.",
        )
    ok(DoctorCheck("python3", py))
    pyarrow = facts.get("pyarrow", "no")
    if pyarrow == "no":
        ok(
            DoctorCheck(
                "pyarrow",
                "not installed on the remote (optional: --verify parquet reads the footer without it)",
                warning=True,
            )
        )
    else:
        ok(DoctorCheck("pyarrow", pyarrow))
    if not check_base_dir:
        return
    if facts.get("base") != "dir":
        raise RemoteUnavailableError(
            f"Remote base_dir does not exist: {remote.base_dir}",
            hint=f"Create it with: ssh {target} mkdir -p '{remote.base_dir}'  (or fix base_dir in remotes.yaml)",
        )
    if facts.get("base_w") != "yes":
        raise RemoteUnavailableError(
            f"Remote base_dir is not writable by {endpoint.user}: {remote.base_dir}",
            hint="Fix its permissions or choose a base_dir you own.",
        )
    ok(DoctorCheck("base_dir", f"{remote.base_dir} exists, writable"))
