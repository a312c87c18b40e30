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
    remote = RemoteConfig(name="s", type="ssh", host="alias", user="u", base_dir="/b")
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
