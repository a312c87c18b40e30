"""Real services for integration tests: a private OpenSSH server, and probes for SGE and Slurm.

Plain module (not a conftest) so tests, benchmarks and scripts can reuse it. It must not import
the ``usrbatch`` package: it checks the environment the package runs in, not the package.

The schedulers are started outside the test run by ``scripts/sge-up`` and ``scripts/slurm-up``;
sshd is started here, per test session, on a random localhost port with throw-away keys, so tests
never touch (or depend on) a system sshd.

``start_sshd(..., auth="2fa" | "password")`` starts an sshd that needs interactive
authentication through PAM for the user ``usrbatch-auth-test`` (both made by
``scripts/services-install ssh``). sshd names its PAM service after its program name, so it runs
through a symlink named ``usrbatch-test-sshd`` and PAM reads ``/etc/pam.d/usrbatch-test-sshd``
(pam_unix, nothing else) instead of Debian's ``sshd`` stack.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD = Path("/usr/sbin/sshd")
SSH_ALIAS = "usrtest"

# The interactive-auth sshd (start_sshd(auth=...)): its login user and PAM service.
AUTH_TEST_USER = "usrbatch-auth-test"
AUTH_TEST_PAM_SERVICE = "usrbatch-test-sshd"
AUTH_TEST_PAM_FILE = Path("/etc/pam.d") / AUTH_TEST_PAM_SERVICE
AUTH_MODES = {
    "key": [],
    # 2FA as on clusters with Duo: a key, then a PAM prompt (pam_unix's "Password: ").
    "2fa": [
        "KbdInteractiveAuthentication yes",
        "PasswordAuthentication no",
        "AuthenticationMethods publickey,keyboard-interactive",
    ],
    # A password login (sshd checks it through PAM).
    "password": [
        "KbdInteractiveAuthentication no",
        "PasswordAuthentication yes",
        "AuthenticationMethods password",
    ],
}

# Which script makes each service available; used in skip/fail messages.
FIX_HINTS = {
    "sshd": "scripts/sshd-check (installs openssh-server; the tests start their own sshd)",
    "sge": "scripts/sge-up (installs, configures and starts Son of Grid Engine)",
    "slurm": "scripts/slurm-up (installs, configures and starts Slurm + munge)",
    "sshd-auth": (
        "scripts/services-install ssh as root (creates the user usrbatch-auth-test and "
        "/etc/pam.d/usrbatch-test-sshd), then run the tests as root"
    ),
}


@dataclass(frozen=True)
class SshdServer:
    """A running private sshd and everything a client needs to reach it without prompts."""

    host: str
    port: int
    user: str
    client_key: Path  # ed25519 private key, no passphrase
    known_hosts: Path  # holds the server's host key for [host]:port
    ssh_config: Path  # `Host usrtest` -> this server, strict host key checking
    host_key_pub: Path
    workdir: Path
    log: Path  # sshd's stderr (LogLevel VERBOSE)
    auth: str = "key"  # "key", "2fa" or "password" (see AUTH_MODES)
    # auth != "key": a directory the login user owns (for base_dir); the caller removes it.
    user_dir: Path | None = None

    @property
    def alias(self) -> str:
        """The `Host` alias defined in ``ssh_config``."""
        return SSH_ALIAS

    def ssh_options(self) -> list[str]:
        """Options for ssh/sftp/scp (and rsync ``-e``) that use only this server's files."""
        return ["-F", str(self.ssh_config), "-o", "BatchMode=yes"]

    def ssh_argv(self) -> list[str]:
        """``ssh`` argv up to and including the destination; append the remote command."""
        return ["ssh", *self.ssh_options(), SSH_ALIAS]


def _free_port(host: str) -> int:
    # The kernel picks a free port; sshd binds it a moment later. A race with another process is
    # possible, so start_sshd retries on "Address already in use".
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=30,
    )


def _write_sshd_config(
    workdir: Path, host: str, port: int, auth: str = "key", authorized_keys: Path | None = None
) -> Path:
    sftp_server = Path("/usr/lib/openssh/sftp-server")
    subsystem = str(sftp_server) if sftp_server.exists() else "internal-sftp"
    lines = [
        f"ListenAddress {host}",
        f"Port {port}",
        f"HostKey {workdir / 'ssh_host_ed25519_key'}",
        f"PidFile {workdir / 'sshd.pid'}",
        f"AuthorizedKeysFile {authorized_keys or workdir / 'authorized_keys'}",
        "PubkeyAuthentication yes",
        # Tests run as root in CI; keys only.
        "PermitRootLogin prohibit-password",
        # The key files live in a pytest temp dir whose modes sshd would otherwise reject.
        "StrictModes no",
    ]
    if auth == "key":
        # PAM would need a system config for this ad-hoc daemon; keys are all we use.
        lines += ["PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no"]
    else:
        # PAM service = program name: the usrbatch-test-sshd symlink (see start_sshd).
        lines += ["UsePAM yes", *AUTH_MODES[auth]]
    lines += [
        # AcceptEnv is left unset: no client environment is accepted.
        "PrintMotd no",
        "PrintLastLog no",
        f"Subsystem sftp {subsystem}",
        # Parallel transfers open many channels and connections at once.
        "MaxSessions 64",
        "MaxStartups 64:30:128",
        "LogLevel VERBOSE",
    ]
    cfg = workdir / "sshd_config"
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


def _write_client_files(workdir: Path, host: str, port: int, user: str) -> tuple[Path, Path]:
    host_pub = (workdir / "ssh_host_ed25519_key.pub").read_text().split()
    known_hosts = workdir / "known_hosts"
    known_hosts.write_text(f"[{host}]:{port} {host_pub[0]} {host_pub[1]}\n")
    ssh_config = workdir / "ssh_config"
    ssh_config.write_text(
        "\n".join(
            [
                f"Host {SSH_ALIAS}",
                f"    HostName {host}",
                f"    Port {port}",
                f"    User {user}",
                f"    IdentityFile {workdir / 'client_ed25519'}",
                "    IdentitiesOnly yes",
                f"    UserKnownHostsFile {known_hosts}",
                # The machine's own known hosts must not vouch for (or conflict with) this server.
                "    GlobalKnownHostsFile /dev/null",
                "    StrictHostKeyChecking yes",
                "    UpdateHostKeys no",
                "    PasswordAuthentication no",
                "    KbdInteractiveAuthentication no",
                "    ConnectTimeout 10",
                "    ServerAliveInterval 15",
                "    LogLevel ERROR",
                "",
            ]
        )
    )
    return known_hosts, ssh_config


def auth_test_unavailable() -> str | None:
    """Why the interactive-auth sshd (start_sshd(auth="2fa"|"password")) cannot run here, or None."""
    if not os.access(SSHD, os.X_OK):
        return f"{SSHD} is not installed"
    if os.geteuid() != 0:
        return "it needs root (sshd switches to the test user; chpasswd sets its password)"
    try:
        home = Path(pwd.getpwnam(AUTH_TEST_USER).pw_dir)
    except KeyError:
        return f"the user {AUTH_TEST_USER} does not exist"
    if not home.is_dir():
        return f"the home directory {home} of {AUTH_TEST_USER} is missing"
    if not AUTH_TEST_PAM_FILE.is_file():
        return f"the PAM service {AUTH_TEST_PAM_FILE} is missing"
    if shutil.which("chpasswd") is None:
        return "chpasswd is not on PATH"
    return None


def set_auth_test_password(password: str | None) -> None:
    """Set the test user's password (chpasswd, fed on stdin, never argv); None locks it again."""
    if password is None:
        argv, line = ["chpasswd", "-e"], f"{AUTH_TEST_USER}:!"
    else:
        argv, line = ["chpasswd"], f"{AUTH_TEST_USER}:{password}"
    res = subprocess.run(argv, input=line + "\n", text=True, capture_output=True, timeout=30)
    if res.returncode != 0:
        raise RuntimeError(
            f"chpasswd for {AUTH_TEST_USER} failed (exit {res.returncode}): {res.stderr.strip()}"
        )


@contextlib.contextmanager
def auth_test_lock(timeout: float = 600.0) -> Iterator[None]:
    """Hold the machine-wide lock on the test user's password: test sessions running at once
    (several engineers, one machine) take turns instead of overwriting each other's password."""
    path = Path(pwd.getpwnam(AUTH_TEST_USER).pw_dir) / ".usrbatch-password.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{path} still locked by another test session after {timeout:g} s"
                    ) from None
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)


def _host_key_served(host: str, port: int, host_pub: Path) -> bool:
    """True when the server on host:port presents OUR host key (not a racing process's server)."""
    try:
        res = subprocess.run(
            ["ssh-keyscan", "-T", "2", "-t", "ed25519", "-p", str(port), host],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    blob = host_pub.read_text().split()[1]
    return any(line.split()[2:3] == [blob] for line in res.stdout.splitlines())


def start_sshd(
    workdir: Path, timeout: float = 10.0, auth: str = "key"
) -> tuple[SshdServer, subprocess.Popen]:
    """Start a private sshd on 127.0.0.1 with fresh keys under ``workdir``.

    ``auth="key"``: the current user, public keys only; returns once a real ``ssh ... true`` has
    succeeded. ``auth="2fa"`` (key then keyboard-interactive) or ``"password"``: the user
    AUTH_TEST_USER through PAM (see auth_test_unavailable; the caller sets the password with
    set_auth_test_password and removes ``server.user_dir``); returns once the server presents its
    host key. Raises RuntimeError (with the sshd log) when the server cannot be started or reached
    within ``timeout`` seconds.
    """
    if auth not in AUTH_MODES:
        raise ValueError(f"auth must be one of {sorted(AUTH_MODES)}, not {auth!r}")
    if not SSHD.exists():
        raise RuntimeError(f"{SSHD} missing: run {FIX_HINTS['sshd']}")
    # sshd refuses to run without its privilege-separation dir; /run starts empty on fresh boots.
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)

    workdir.mkdir(parents=True, exist_ok=True)
    host = "127.0.0.1"
    _keygen(workdir / "ssh_host_ed25519_key", "usrtest-host")
    _keygen(workdir / "client_ed25519", "usrtest-client")
    program, user_dir = SSHD, None
    if auth == "key":
        user = pwd.getpwuid(os.getuid()).pw_name
        authorized_keys = workdir / "authorized_keys"
    else:
        why = auth_test_unavailable()
        if why:
            raise RuntimeError(f"interactive-auth sshd unavailable: {why}. Fix: run {FIX_HINTS['sshd-auth']}")
        user = AUTH_TEST_USER
        entry = pwd.getpwnam(user)
        # sshd reads authorized_keys as the user: it cannot live in the root-only pytest temp dir.
        user_dir = Path(tempfile.mkdtemp(prefix=f"sshd-{auth}-", dir=entry.pw_dir))
        os.chown(user_dir, entry.pw_uid, entry.pw_gid)
        user_dir.chmod(0o755)
        authorized_keys = user_dir / "authorized_keys"
        program = workdir / AUTH_TEST_PAM_SERVICE  # PAM service name = sshd's program name
        if not program.is_symlink():
            program.symlink_to(SSHD)
    authorized_keys.write_text((workdir / "client_ed25519.pub").read_text())
    authorized_keys.chmod(0o644)
    log = workdir / "sshd.log"

    try:
        return _serve(workdir, host, user, auth, program, authorized_keys, user_dir, log, timeout)
    except BaseException:
        if user_dir is not None:
            shutil.rmtree(user_dir, ignore_errors=True)
        raise


def _serve(
    workdir: Path,
    host: str,
    user: str,
    auth: str,
    program: Path,
    authorized_keys: Path,
    user_dir: Path | None,
    log: Path,
    timeout: float,
) -> tuple[SshdServer, subprocess.Popen]:
    """start_sshd's retry loop: a free port, a config for it, the daemon, then the readiness probe."""
    last_error = ""
    for _attempt in range(5):
        port = _free_port(host)
        cfg = _write_sshd_config(workdir, host, port, auth, authorized_keys)
        known_hosts, ssh_config = _write_client_files(workdir, host, port, user)
        check = subprocess.run(
            [str(program), "-t", "-f", str(cfg)], capture_output=True, text=True, timeout=30
        )
        if check.returncode != 0:
            raise RuntimeError(f"sshd rejects its config {cfg}: {check.stderr.strip()}")
        server = SshdServer(
            host=host,
            port=port,
            user=user,
            client_key=workdir / "client_ed25519",
            known_hosts=known_hosts,
            ssh_config=ssh_config,
            host_key_pub=workdir / "ssh_host_ed25519_key.pub",
            workdir=workdir,
            log=log,
            auth=auth,
            user_dir=user_dir,
        )
        log_offset = log.stat().st_size if log.exists() else 0
        with log.open("ab") as log_fh:
            # Own session: a Ctrl-C aimed at pytest must not kill sshd before teardown runs.
            proc = subprocess.Popen(
                [str(program), "-D", "-e", "-f", str(cfg)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log_fh,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            if auth != "key":  # no non-interactive login exists: check the server is ours
                if _host_key_served(host, port, server.host_key_pub) and proc.poll() is None:
                    return server, proc
                last_error = "host key not served yet"
                time.sleep(0.1)
                continue
            try:
                probe = subprocess.run(
                    ["ssh", *server.ssh_options(), "-o", "ConnectTimeout=2", SSH_ALIAS, "true"],
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    text=True,
                    timeout=10,
                )
            except subprocess.TimeoutExpired:  # a hung login (e.g. a slow shell rc): probe again
                last_error = "ssh probe did not finish within 10 s"
                continue
            except BaseException:  # interrupted: never leave the daemon behind
                stop_sshd(proc)
                raise
            if probe.returncode == 0:
                return server, proc
            last_error = probe.stderr.strip()
            time.sleep(0.1)
        stop_sshd(proc)
        text = log.read_bytes()[log_offset:].decode(errors="replace")
        if "Address already in use" in text:
            continue  # lost the port race: pick another
        hint = (
            " (account locked? UsePAM is off, so a '!' password field refuses keys)"
            if "locked" in text
            else ""
        )
        raise RuntimeError(
            f"sshd on {host}:{port} not reachable within {timeout}s{hint}: {last_error}\n--- {log}:\n{text[-4000:]}"
        )
    raise RuntimeError(f"sshd could not bind a free port after 5 attempts; see {log}")


def _child_pids(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


def stop_sshd(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    """Stop an sshd from start_sshd (SIGTERM, then SIGKILL), and its per-connection processes
    (a stopped listener leaves open sessions running, e.g. an OpenSSH ControlMaster's
    connection, which would otherwise outlive the test session); safe to call twice."""
    if proc.poll() is not None:
        return
    sessions = _child_pids(proc.pid)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)
    for pid in sessions:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)


def require_service(name: str, available: bool, why: str) -> None:
    """Skip (locally) or fail (in CI, where every service must be there) when unavailable."""
    if available:
        return
    fix = FIX_HINTS.get(name, "the matching scripts/*-up script")
    msg = f"{name} unavailable: {why}. Fix: run {fix}."
    if os.environ.get("CI", "").strip().lower() in {"true", "1"}:
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


def _runs_ok(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None


def sge_available() -> bool:
    """qsub is on PATH and the qmaster answers ``qstat`` within 10 s."""
    if shutil.which("qsub") is None or shutil.which("qstat") is None:
        return False
    res = _runs_ok(["qstat"], timeout=10)
    return res is not None and res.returncode == 0


def _slurmctld_refuses_connections() -> bool:
    """True when slurm.conf names a controller that refuses TCP connections (so it is down).

    sinfo retries a dead controller for ~9 s; a refused connect answers in milliseconds. Anything
    unclear (no readable slurm.conf, a timeout) returns False and leaves the verdict to sinfo.
    """
    conf = Path(os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf"))
    try:
        text = conf.read_text()
    except OSError:
        return False
    host, port = None, 6817
    for line in text.splitlines():
        key, _, value = line.split("#", 1)[0].strip().partition("=")
        if key.lower() in {"slurmctldhost", "controlmachine"} and host is None:
            host = value.split("(")[0].strip()  # "name(address)" form
        elif key.lower() == "slurmctldport" and value.strip().isdigit():
            port = int(value)
    if not host:
        return False
    try:
        with socket.create_connection((host, port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def slurm_available() -> bool:
    """sbatch is on PATH and ``sinfo`` shows a responding node that can run jobs, within 10 s."""
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return False
    if _slurmctld_refuses_connections():
        return False
    res = _runs_ok(["sinfo", "-h", "-o", "%T"], timeout=10)
    if res is None or res.returncode != 0:
        return False
    # "%T" appends "*" to not-responding nodes, so "idle*" correctly does not count.
    return any(state in {"idle", "mixed", "allocated", "completing"} for state in res.stdout.split())
