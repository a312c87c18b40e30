"""`usr remotes doctor` against the real sshd: passes, and fails at the right step with one message."""

from __future__ import annotations

from pathlib import Path

import pytest

from usrbatch.cli.common import run_cli
from usrbatch.cli.usr_main import usr

try:
    from .services import SshdServer
except ImportError:  # pytest "prepend" import mode
    from services import SshdServer  # type: ignore[no-redef]


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sshd_server: SshdServer) -> Path:
    path = tmp_path / "remotes.yaml"
    path.write_text("remotes: {}\n")
    monkeypatch.setenv("USR_REMOTES_PATH", str(path))
    monkeypatch.setenv("USRBATCH_SSH_CONFIG", str(sshd_server.ssh_config))
    return path


def _usr(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str]]:
    code = run_cli(usr, list(argv))
    captured = capsys.readouterr()
    return code, (captured.out + captured.err).splitlines()


def _add(capsys: pytest.CaptureFixture[str], name: str, *extra: str) -> None:
    code, out = _usr(capsys, "remotes", "add", name, *extra)
    assert code == 0, out


def _names(lines: list[str]) -> list[str]:
    return [line.split(":")[0] for line in lines if ": ok" in line or ": WARNING" in line]


ALL_CHECKS = [
    "config",
    "permissions",
    "tcp",
    "host key",
    "auth",
    "remote sh",
    "flock",
    "sha256",
    "python3",
    "pyarrow",
    "base_dir",
]


def test_doctor_passes_against_fixture(
    cfg: Path, capsys: pytest.CaptureFixture[str], sshd_server: SshdServer, tmp_path: Path
) -> None:
    base = tmp_path / "base $(x) 'q"
    base.mkdir()
    _add(capsys, "t", "--host", sshd_server.alias, "--user", sshd_server.user, "--base-dir", str(base))
    code, lines = _usr(capsys, "remotes", "doctor", "--remote", "t")
    assert code == 0, lines
    assert _names(lines) == ALL_CHECKS
    assert lines[-1] == "Doctor checks passed."
    assert any(line.startswith("host key: ok (ssh-ed25519 SHA256:") for line in lines)
    assert f"auth: ok ({sshd_server.client_key})" in lines
    assert list(base.iterdir()) == []  # the writability probe cleaned up


def test_doctor_wrong_port_fails_at_tcp(
    cfg: Path, capsys: pytest.CaptureFixture[str], sshd_server: SshdServer
) -> None:
    import socket

    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _add(
        capsys,
        "w",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--user",
        sshd_server.user,
        "--base-dir",
        "/tmp",
    )
    code, lines = _usr(capsys, "remotes", "doctor", "--remote", "w")
    assert code == 2
    assert _names(lines) == ["config", "permissions"]
    assert [x for x in lines if x.startswith("ERROR:")] == [
        f"ERROR: TCP connection to 127.0.0.1:{port} failed: Connection refused."
    ]


def test_doctor_unknown_host_key_fails_at_host_key(
    cfg: Path, capsys: pytest.CaptureFixture[str], sshd_server: SshdServer
) -> None:
    # `localhost` is not in the fixture's known_hosts (only [127.0.0.1]:port is).
    _add(
        capsys,
        "u",
        "--host",
        "localhost",
        "--port",
        str(sshd_server.port),
        "--user",
        sshd_server.user,
        "--base-dir",
        "/tmp",
    )
    code, lines = _usr(capsys, "remotes", "doctor", "--remote", "u")
    assert code == 2
    assert _names(lines) == ["config", "permissions", "tcp"]
    error = next(x for x in lines if x.startswith("ERROR:"))
    assert "not trusted" in error and f"ssh-keyscan -p {sshd_server.port} localhost >>" in error
    assert "SHA256:" in error


def test_doctor_bad_base_dir_fails_last(
    cfg: Path, capsys: pytest.CaptureFixture[str], sshd_server: SshdServer, tmp_path: Path
) -> None:
    missing = tmp_path / "no such dir"
    _add(capsys, "b", "--host", sshd_server.alias, "--user", sshd_server.user, "--base-dir", str(missing))
    code, lines = _usr(capsys, "remotes", "doctor", "--remote", "b")
    assert code == 2
    assert _names(lines) == ALL_CHECKS[:-1]
    assert f"ERROR: Remote base_dir does not exist: {missing}" in lines
    code, lines = _usr(capsys, "remotes", "doctor", "--remote", "b", "--no-check-base-dir")
    assert code == 0 and lines[-1] == "Doctor checks passed."
    assert not missing.exists()


def test_doctor_auth_failure_names_keys_tried(
    cfg: Path, capsys: pytest.CaptureFixture[str], sshd_server: SshdServer, tmp_path: Path, monkeypatch
) -> None:
    import subprocess

    wrong = tmp_path / "wrong_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong)], check=True)
    monkeypatch.setenv("WRONG_KEY", str(wrong))
    monkeypatch.setenv("SSH_AUTH_SOCK", str(tmp_path / "no-agent"))
    ssh_cfg = tmp_path / "ssh_config"  # host keys from the fixture, but none of its identities
    ssh_cfg.write_text(f"Host 127.0.0.1\n    UserKnownHostsFile {sshd_server.known_hosts}\n")
    monkeypatch.setenv("USRBATCH_SSH_CONFIG", str(ssh_cfg))
    _add(
        capsys,
        "k",
        "--host",
        "127.0.0.1",
        "--port",
        str(sshd_server.port),
        "--user",
        sshd_server.user,
        "--base-dir",
        "/tmp",
        "--ssh-key-env",
        "WRONG_KEY",
    )
    code, lines = _usr(capsys, "remotes", "doctor", "--remote", "k")
    assert code == 2
    assert _names(lines) == ["config", "permissions", "tcp", "host key"]
    error = next(x for x in lines if x.startswith("ERROR:"))
    assert error == f"ERROR: SSH authentication failed for {sshd_server.user}@127.0.0.1 (tried: {wrong})."
    assert "PRIVATE KEY" not in "\n".join(lines)
