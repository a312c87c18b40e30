"""Trust like OpenSSH, against the real sshd: file permissions, @revoked / @cert-authority lines,
ports that do not speak SSH, failing ProxyCommands; the CLI prints one error, never a traceback."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from usrbatch.cli.common import run_cli
from usrbatch.cli.usr_main import usr
from usrbatch.errors import RemoteConfigError, RemoteUnavailableError
from usrbatch.remotes import RemoteConfig
from usrbatch.transport.openssh import OpenSshTransport
from usrbatch.transport.ssh import SshTransport
from usrbatch.transport.ssh_connect import NotSshError

try:
    from .services import SshdServer
except ImportError:  # pytest "prepend" import mode
    from services import SshdServer  # type: ignore[no-redef]


def _config(
    tmp: Path,
    server: SshdServer,
    *,
    port: int | None = None,
    key: Path | None = None,
    known_hosts: Path | None = None,
    extra: str = "",
    timeout: int = 10,
) -> Path:
    cfg = tmp / "ssh_config"
    cfg.write_text(
        "Host trust\n"
        f"    HostName {server.host}\n"
        f"    Port {port or server.port}\n"
        f"    User {server.user}\n"
        f"    IdentityFile {key or server.client_key}\n"
        "    IdentitiesOnly yes\n"
        f"    UserKnownHostsFile {known_hosts or server.known_hosts}\n"
        "    GlobalKnownHostsFile /dev/null\n"
        f"    ConnectTimeout {timeout}\n" + extra
    )
    cfg.chmod(0o644)
    return cfg


def _remote(server: SshdServer, base: Path) -> RemoteConfig:
    return RemoteConfig(name="trust", type="ssh", host="trust", user=server.user, base_dir=str(base))


def _connect(server: SshdServer, cfg: Path, tmp: Path, **kw: object) -> SshTransport:
    t = SshTransport(_remote(server, tmp), ssh_config_path=cfg, retries=2, backoff=0.05, **kw)  # type: ignore[arg-type]
    t.connect()
    return t


@pytest.fixture(autouse=True)
def no_agent(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SSH_AUTH_SOCK", str(tmp_path / "no-agent"))  # keys come from files only


def test_ssh_config_writable_by_others_is_refused(sshd_server: SshdServer, tmp_path: Path) -> None:
    cfg = _config(tmp_path, sshd_server)
    cfg.chmod(0o666)
    with pytest.raises(RemoteConfigError) as info:
        SshTransport(_remote(sshd_server, tmp_path), ssh_config_path=cfg)
    assert "Bad owner or permissions: mode 0666 is writable by group/others" in str(info.value)
    assert info.value.hint == f"Fix it with: chmod go-w {cfg}"
    cfg.chmod(0o644)
    _connect(sshd_server, cfg, tmp_path).close()


def test_unprotected_private_key_is_ignored_with_the_fix(sshd_server: SshdServer, tmp_path: Path) -> None:
    key = tmp_path / "id_copy"
    shutil.copy(sshd_server.client_key, key)
    key.chmod(0o644)
    cfg = _config(tmp_path, sshd_server, key=key)
    with pytest.raises(RemoteUnavailableError) as info:
        _connect(sshd_server, cfg, tmp_path)
    message = str(info.value)
    assert message.startswith(f"SSH authentication failed for {sshd_server.user}@trust")
    assert f"{key} (UNPROTECTED PRIVATE KEY FILE: permissions 0644 are too open" in message
    assert f"fix: chmod 600 {key}" in message
    key.chmod(0o600)
    _connect(sshd_server, cfg, tmp_path).close()


def test_openssh_backend_refuses_a_writable_ssh_config(
    sshd_server: SshdServer, tmp_path: Path, control_dir: Path
) -> None:
    """OpenSSH itself checks ~/.ssh/config but not a config given with -F: we check both."""
    cfg = _config(tmp_path, sshd_server)
    cfg.chmod(0o660)
    with pytest.raises(RemoteConfigError) as info:
        OpenSshTransport(_remote(sshd_server, tmp_path), ssh_config_path=cfg)
    assert "Bad owner or permissions: mode 0660 is writable by group/others" in str(info.value)
    assert info.value.hint == f"Fix it with: chmod go-w {cfg}"
    cfg.chmod(0o644)
    t = OpenSshTransport(_remote(sshd_server, tmp_path), ssh_config_path=cfg, retries=1)
    try:
        assert t.run_sh("echo ok")[1].strip() == "ok"
    finally:
        t.close()


def test_openssh_backend_names_an_unprotected_key_and_the_fix(
    sshd_server: SshdServer, tmp_path: Path, control_dir: Path
) -> None:
    key = tmp_path / "id_copy"
    shutil.copy(sshd_server.client_key, key)
    key.chmod(0o640)
    cfg = _config(tmp_path, sshd_server, key=key)
    t = OpenSshTransport(_remote(sshd_server, tmp_path), ssh_config_path=cfg, retries=1)
    with pytest.raises(RemoteUnavailableError) as info:
        t.connect()
    t.close()
    assert f"private key {key} was ignored: UNPROTECTED PRIVATE KEY FILE" in str(info.value)
    assert info.value.hint == f"Fix it with: chmod 600 {key}"


def test_doctor_reports_each_bad_file_with_its_fix(
    sshd_server: SshdServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key = tmp_path / "id_copy"
    shutil.copy(sshd_server.client_key, key)
    key.chmod(0o640)
    cfg = _config(tmp_path, sshd_server, key=key)
    cfg.chmod(0o664)
    remotes = tmp_path / "remotes.yaml"
    remotes.write_text(
        f"remotes:\n  trust: {{host: trust, user: {sshd_server.user}, base_dir: {tmp_path}}}\n"
    )
    remotes.chmod(0o646)
    monkeypatch.setenv("USR_REMOTES_PATH", str(remotes))
    monkeypatch.setenv("USRBATCH_SSH_CONFIG", str(cfg))
    code = run_cli(usr, ["remotes", "doctor", "--remote", "trust"])
    lines = capsys.readouterr().out.splitlines()
    assert code == 2
    failed = [line for line in lines if line.startswith("permissions: FAILED")]
    assert [line.split(" (")[1].split(":")[0] for line in failed] == [
        f"remotes.yaml {remotes}",
        f"ssh config {cfg}",
        f"private key {key}",
    ]
    assert lines[-1] == f"Hint: Fix with: chmod go-w {remotes} && chmod go-w {cfg} && chmod 600 {key}"
    for path, mode in ((remotes, 0o644), (cfg, 0o644), (key, 0o600)):
        path.chmod(mode)
    assert run_cli(usr, ["remotes", "doctor", "--remote", "trust", "--no-check-base-dir"]) == 0
    assert "Doctor checks passed." in capsys.readouterr().out


def _server_key_line(server: SshdServer) -> tuple[str, str]:
    kind, blob = server.host_key_pub.read_text().split()[:2]
    return kind, blob


def test_revoked_host_key_is_refused(sshd_server: SshdServer, tmp_path: Path) -> None:
    kind, blob = _server_key_line(sshd_server)
    kh = tmp_path / "known_hosts"
    kh.write_text(
        f"[{sshd_server.host}]:{sshd_server.port} {kind} {blob}\n# a comment\n@revoked * {kind} {blob}\n"
    )
    cfg = _config(tmp_path, sshd_server, known_hosts=kh)
    with pytest.raises(RemoteUnavailableError) as info:
        _connect(sshd_server, cfg, tmp_path)
    assert str(info.value).startswith(f"REVOKED HOST KEY for [{sshd_server.host}]:{sshd_server.port}")
    assert f"{kh}:3 marks @revoked" in str(info.value)


def test_cert_authority_lines_are_skipped_not_a_traceback(
    sshd_server: SshdServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kind, blob = _server_key_line(sshd_server)
    ca = f"@cert-authority *.example,[{sshd_server.host}]:* {kind} {blob}\n"
    kh = tmp_path / "known_hosts"
    kh.write_text(ca + "garbage line\n@unknown-marker x y z\n")
    cfg = _config(tmp_path, sshd_server, known_hosts=kh)
    with pytest.raises(RemoteUnavailableError) as info:
        _connect(sshd_server, cfg, tmp_path)
    assert "is not trusted" in str(info.value)
    assert f"{kh}:1 has an @cert-authority line for this host" in str(info.value)
    kh.write_text(ca + f"[{sshd_server.host}]:{sshd_server.port} {kind} {blob}\n")
    _connect(sshd_server, cfg, tmp_path).close()  # the plain key still works beside a CA line
    assert capsys.readouterr().err.splitlines() == [
        f"WARNING: {kh}:1: @cert-authority line skipped for [{sshd_server.host}]:{sshd_server.port} "
        "(usrbatch does not verify host certificates; the host's own key in known_hosts was used)."
    ]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A TCP listener that accepts and never says a word."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield s.getsockname()[1]


@pytest.fixture
def http_port() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    server.RequestHandlerClass.log_message = lambda *a, **k: None  # type: ignore[method-assign]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_silent_port_fails_once_without_retries(
    sshd_server: SshdServer, tmp_path: Path, silent_port: int
) -> None:
    cfg = _config(tmp_path, sshd_server, port=silent_port, timeout=2)
    t = SshTransport(_remote(sshd_server, tmp_path), ssh_config_path=cfg, retries=4, backoff=0.05)
    with pytest.raises(NotSshError) as info:
        t.connect()
    assert str(info.value) == (
        f"{sshd_server.host}:{silent_port} sent no SSH version string within 2 s: it does not speak SSH "
        "(or is not answering)."
    )
    assert t.stats.retries == 0  # not a transient failure: no retry loop


def _usr_process(tmp_path: Path, cfg: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    remotes = tmp_path / "remotes.yaml"
    remotes.write_text(f"remotes:\n  trust: {{host: trust, user: root, base_dir: {tmp_path}}}\n")
    env = {
        **os.environ,
        "USR_REMOTES_PATH": str(remotes),
        "USRBATCH_SSH_CONFIG": str(cfg),
        "USRBATCH_SSH_BACKOFF": "0.05",
        "SSH_AUTH_SOCK": str(tmp_path / "no-agent"),
    }
    return subprocess.run(
        [sys.executable, "-m", "usrbatch.cli.usr_main", "--root", str(tmp_path / "root"), *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@pytest.mark.parametrize("kind", ["http", "silent"])
def test_non_ssh_port_prints_one_error_and_no_traceback(
    sshd_server: SshdServer, tmp_path: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    port = request.getfixturevalue(f"{kind}_port")
    cfg = _config(tmp_path, sshd_server, port=port, timeout=2)
    log = tmp_path / "audit.jsonl"
    res = _usr_process(tmp_path, cfg, "--log-json", str(log), "diff", "densegen/demo", "trust")
    assert res.returncode == 2
    assert "Traceback" not in res.stderr + res.stdout and "paramiko" not in res.stderr
    errors = [line for line in res.stdout.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1 and "SSH version string" in errors[0], res.stdout + res.stderr
    assert res.stderr.strip() == ""
    if kind == "http":
        events = [json.loads(line) for line in log.read_text().splitlines()]
        paramiko_lines = [e for e in events if e.get("event") == "ssh.paramiko"]
        assert paramiko_lines and all("Traceback" not in e["message"] for e in paramiko_lines)
        assert any("protocol banner" in e["message"] for e in paramiko_lines)


def test_failing_proxycommand_says_so_with_stderr_and_status(sshd_server: SshdServer, tmp_path: Path) -> None:
    script = tmp_path / "proxy.sh"
    script.write_text('#!/bin/sh\necho "proxy: cannot reach $1:$2 (gateway down)" >&2\nexit 7\n')
    script.chmod(0o755)
    cfg = _config(tmp_path, sshd_server, extra=f"    ProxyCommand {script} %h %p\n")
    res = _usr_process(tmp_path, cfg, "diff", "densegen/demo", "trust")
    assert res.returncode == 2
    assert "Traceback" not in res.stdout + res.stderr and "No existing session" not in res.stdout
    error = next(line for line in res.stdout.splitlines() if line.startswith("ERROR:"))
    assert error == (
        f"ERROR: ProxyCommand for trust failed (exit 7: proxy: cannot reach {sshd_server.host}:{sshd_server.port} "
        f"(gateway down)): {script} {sshd_server.host} {sshd_server.port}"
    )


RELAY = """import os, socket, sys, threading
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
def up():
    while True:
        data = os.read(0, 65536)
        if not data:
            s.shutdown(socket.SHUT_WR)
            return
        s.sendall(data)
threading.Thread(target=up, daemon=True).start()
while True:
    data = s.recv(65536)
    if not data:
        break
    os.write(1, data)
"""


def test_working_proxycommand_still_connects(sshd_server: SshdServer, tmp_path: Path) -> None:
    relay = tmp_path / "relay.py"
    relay.write_text(RELAY)
    cfg = _config(tmp_path, sshd_server, extra=f"    ProxyCommand {sys.executable} {relay} %h %p\n")
    t = _connect(sshd_server, cfg, tmp_path)
    try:
        rc, out = t.run_sh("echo via-proxy")
        assert (rc, out.strip()) == (0, "via-proxy")
    finally:
        t.close()


NO_DAC = """#!{python}
# Run {target} without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH: root then obeys file modes, so a
# chmod 000 file is unreadable, as it is for every other user.
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
for cap in (1, 2):
    if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
        sys.exit("prctl failed: %d" % ctypes.get_errno())
os.execv({target!r}, [{target!r}, *sys.argv[1:]])
"""


def _obeying_file_modes(path: Path, target: str) -> Path:
    """`target`, or (as root) a wrapper at `path` that runs it without root's DAC override."""
    if os.geteuid() != 0:
        return Path(target)
    path.write_text(NO_DAC.format(python=sys.executable, target=target))
    path.chmod(0o755)
    return path


def test_unreadable_files_are_named_not_a_traceback(sshd_server: SshdServer, tmp_path: Path) -> None:
    try:
        from .services import _keygen, _serve, stop_sshd
    except ImportError:
        from services import _keygen, _serve, stop_sshd  # type: ignore[no-redef]

    local, cluster = tmp_path / "local", tmp_path / "cluster"
    for d in (local, cluster):
        d.mkdir()
    assert run_cli(usr, ["--root", str(cluster), "init", "densegen/demo"]) == 0
    meta = cluster / "densegen" / "demo" / "meta.md"
    meta.chmod(0)
    remotes = tmp_path / "remotes.yaml"
    remotes.write_text(f"remotes:\n  lab: {{type: local, base_dir: {cluster}}}\n")
    env = {**os.environ, "USR_REMOTES_PATH": str(remotes)}
    python = _obeying_file_modes(tmp_path / "python-no-dac", sys.executable)
    cmd = [str(python), "-m", "usrbatch.cli.usr_main", "--root", str(local)]
    res = subprocess.run(
        [*cmd, "pull", "densegen/demo", "lab", "-y"], capture_output=True, text=True, env=env
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stdout.splitlines()[0] == f"ERROR: Permission denied: {meta}"

    # The same file behind an sshd that obeys file modes.
    workdir = tmp_path / "sshd"
    workdir.mkdir()
    _keygen(workdir / "ssh_host_ed25519_key", "h")
    _keygen(workdir / "client_ed25519", "c")
    keys = workdir / "authorized_keys"
    keys.write_text((workdir / "client_ed25519.pub").read_text())
    program = _obeying_file_modes(workdir / "sshd-no-dac", "/usr/sbin/sshd")
    server, proc = _serve(
        workdir, "127.0.0.1", sshd_server.user, "key", program, keys, None, workdir / "log", 10.0
    )
    try:
        remotes.write_text(
            f"remotes:\n  c: {{host: {server.alias}, user: {server.user}, base_dir: {cluster}}}\n"
        )
        env["USRBATCH_SSH_CONFIG"] = str(server.ssh_config)
        base = [sys.executable, "-m", "usrbatch.cli.usr_main", "--root", str(local)]
        res = subprocess.run(
            [*base, "pull", "densegen/demo", "c", "-y"], capture_output=True, text=True, env=env
        )
    finally:
        stop_sshd(proc)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    error = res.stdout.splitlines()[0]
    assert (
        error.startswith("ERROR: Remote inventory on") and str(meta) in error and "Permission denied" in error
    )


def test_identities_only_uses_the_agent_copy_of_an_encrypted_key(
    sshd_server: SshdServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As OpenSSH: IdentitiesOnly limits the agent to the listed identities, it does not skip it,
    so a passphrase-protected IdentityFile loaded with ssh-add works (the wizard's block)."""
    key = tmp_path / "enc_key"
    shutil.copy(sshd_server.client_key, key)
    shutil.copy(f"{sshd_server.client_key}.pub", f"{key}.pub")
    key.chmod(0o600)
    subprocess.run(["ssh-keygen", "-q", "-p", "-P", "", "-N", "s3cret-pass", "-f", str(key)], check=True)
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if sock.exists():
                break
            subprocess.run(["sleep", "0.05"])
        askpass = tmp_path / "askpass"
        askpass.write_text("#!/bin/sh\necho s3cret-pass\n")
        askpass.chmod(0o700)
        env = {**os.environ, "SSH_AUTH_SOCK": str(sock), "SSH_ASKPASS": str(askpass)}
        env["SSH_ASKPASS_REQUIRE"] = "force"
        subprocess.run(
            ["ssh-add", str(key)], env=env, check=True, capture_output=True, stdin=subprocess.DEVNULL
        )
        cfg = _config(tmp_path, sshd_server, key=key)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        t = _connect(sshd_server, cfg, tmp_path)
        try:
            assert t.connect().auth_method.startswith("ssh-agent key 1")
        finally:
            t.close()
        monkeypatch.setenv("SSH_AUTH_SOCK", str(tmp_path / "no-agent"))
        with pytest.raises(RemoteUnavailableError, match=r"encrypted: load it with ssh-add"):
            _connect(sshd_server, cfg, tmp_path)
    finally:
        agent.terminate()
        agent.wait(timeout=10)
