"""open_transport picks the implementation from the remote type; nothing connects eagerly."""

from __future__ import annotations

from pathlib import Path

from usrbatch.remotes import RemoteConfig
from usrbatch.transport.base import Transport
from usrbatch.transport.factory import open_transport
from usrbatch.transport.local import LocalTransport
from usrbatch.transport.ssh import SshTransport


def test_local_and_ssh(tmp_path: Path) -> None:
    local = open_transport(RemoteConfig(name="l", type="local", base_dir=str(tmp_path)))
    assert isinstance(local, LocalTransport) and isinstance(local, Transport)
    cfg = tmp_path / "ssh_config"
    cfg.write_text("Host alias\n    HostName 192.0.2.1\n")
    remote = RemoteConfig(name="s", type="ssh", host="alias", user="u", base_dir="/b", transport="paramiko")
    ssh = open_transport(remote, ssh_config_path=cfg, retries=1)
    assert isinstance(ssh, SshTransport) and isinstance(ssh, Transport)
    assert ssh.endpoint.hostname == "192.0.2.1" and ssh.stats.connects == 0
    assert ssh.label == "u@alias:/b"
    ssh.close()


def test_retry_settings_from_env(tmp_path: Path, monkeypatch) -> None:
    import pytest

    from usrbatch.errors import TransferError

    cfg = tmp_path / "ssh_config"
    cfg.write_text("")
    remote = RemoteConfig(name="s", type="ssh", host="h", user="u", base_dir="/b")
    monkeypatch.setenv("USRBATCH_SSH_RETRIES", "7")
    monkeypatch.setenv("USRBATCH_SSH_BACKOFF", "0.25")
    t = SshTransport(remote, ssh_config_path=cfg)
    assert (t.retries, t.backoff) == (7, 0.25)
    assert SshTransport(remote, ssh_config_path=cfg, retries=2, backoff=1.0).retries == 2
    monkeypatch.setenv("USRBATCH_SSH_RETRIES", "many")
    with pytest.raises(TransferError, match="USRBATCH_SSH_RETRIES must be a number"):
        SshTransport(remote, ssh_config_path=cfg)


def test_openssh_is_the_default_where_ssh_exists(tmp_path: Path, monkeypatch) -> None:
    import shutil

    import pytest

    from usrbatch.errors import RemoteConfigError
    from usrbatch.transport.factory import ssh_backend
    from usrbatch.transport.openssh import OpenSshTransport

    monkeypatch.delenv("USRBATCH_SSH_TRANSPORT", raising=False)
    monkeypatch.setenv("USRBATCH_CONTROL_DIR", str(tmp_path / "cm"))
    cfg = tmp_path / "ssh_config"
    cfg.write_text("")
    remote = RemoteConfig(name="s", type="ssh", host="alias", user="u", base_dir="/b")
    expected = "openssh" if shutil.which("ssh") else "paramiko"
    assert ssh_backend(remote) == expected
    t = open_transport(remote, ssh_config_path=cfg)
    assert isinstance(t, OpenSshTransport) == (expected == "openssh")
    assert t.stats.connects == 0 and t.label == "u@alias:/b"
    t.close()
    assert (tmp_path / "cm").stat().st_mode & 0o777 == 0o700
    monkeypatch.setenv("PATH", str(tmp_path))  # no ssh client: paramiko
    assert ssh_backend(remote) == "paramiko"
    monkeypatch.setenv("USRBATCH_SSH_TRANSPORT", "opnessh")
    with pytest.raises(RemoteConfigError, match="USRBATCH_SSH_TRANSPORT must be one of openssh, paramiko"):
        ssh_backend(remote)
    assert (
        ssh_backend(
            RemoteConfig(name="s", type="ssh", host="a", user="u", base_dir="/b", transport="openssh")
        )
        == "openssh"
    )


def test_control_dir_others_can_enter_is_refused(tmp_path: Path, monkeypatch) -> None:
    import pytest

    from usrbatch.errors import RemoteConfigError
    from usrbatch.transport.openssh_target import ssh_target

    shared = tmp_path / "cm"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    monkeypatch.setenv("USRBATCH_CONTROL_DIR", str(shared))
    remote = RemoteConfig(name="s", type="ssh", host="alias", user="u", base_dir="/b")
    with pytest.raises(RemoteConfigError, match=r"must be owned by you with mode 0700 \(it is mode 755"):
        ssh_target(remote)
    shared.chmod(0o700)
    target = ssh_target(remote, ssh_config_path=None)
    assert target.control_path.parent == shared and len(target.control_path.name) == 23
    argv = target.client_argv("sh -c 'x'")
    assert argv[-3:] == ["--", "alias", "sh -c 'x'"] and "BatchMode=yes" in argv and "-F" not in argv
    assert "StrictHostKeyChecking=yes" in argv and "UpdateHostKeys=no" in argv
