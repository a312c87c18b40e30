"""ssh_config resolution and known_hosts verification (no network)."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import paramiko
import pytest

from usrbatch.errors import RemoteConfigError, RemoteUnavailableError
from usrbatch.remotes import RemoteConfig
from usrbatch.transport.ssh_config import HostKeyCheck, fingerprint, resolve_endpoint


def _remote(**kw: object) -> RemoteConfig:
    data: dict = {"name": "r", "type": "ssh", "host": "scc", "user": "alice", "base_dir": "/p"}
    data.update(kw)
    return RemoteConfig(**data)


@pytest.fixture
def ssh_config(tmp_path: Path) -> Path:
    cfg = tmp_path / "config"
    cfg.write_text(
        "Host scc\n    HostName scc1.bu.edu\n    Port 2200\n    User bob\n    IdentityFile ~/.ssh/id_scc\n"
        f"    UserKnownHostsFile {tmp_path}/kh1 {tmp_path}/kh2\n    ProxyJump gw\n    ConnectTimeout 7\n"
        "Host plain\n    HostName 10.0.0.5\n"
    )
    return cfg


def test_alias_resolution_and_precedence(ssh_config: Path, tmp_path: Path) -> None:
    ep = resolve_endpoint(_remote(), ssh_config_path=ssh_config)
    assert (ep.hostname, ep.port, ep.user) == ("scc1.bu.edu", 2200, "alice")  # remotes.yaml user wins
    assert ep.identity_files == (Path("~/.ssh/id_scc").expanduser(),)
    assert ep.known_hosts_files[:2] == (tmp_path / "kh1", tmp_path / "kh2")
    assert ep.proxy_jump == "gw" and ep.connect_timeout == 7.0
    assert ep.host_key_name == "[scc1.bu.edu]:2200"
    assert resolve_endpoint(_remote(port=2022), ssh_config_path=ssh_config).port == 2022
    plain = resolve_endpoint(_remote(host="plain"), ssh_config_path=ssh_config)
    assert (plain.hostname, plain.port, plain.host_key_name, plain.proxy_jump) == (
        "10.0.0.5",
        22,
        "10.0.0.5",
        None,
    )
    assert not plain.identities_only and plain.identity_files  # default keys


def test_ssh_key_env_and_env_config(
    ssh_config: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("USRBATCH_SSH_CONFIG", str(ssh_config))
    monkeypatch.setenv("MY_KEY", str(tmp_path / "k"))
    ep = resolve_endpoint(_remote(ssh_key_env="MY_KEY"))
    assert ep.identity_files[0] == tmp_path / "k" and ep.identities_only
    monkeypatch.delenv("MY_KEY")
    with pytest.raises(RemoteConfigError, match="Environment variable 'MY_KEY' not set"):
        resolve_endpoint(_remote(ssh_key_env="MY_KEY"))
    with pytest.raises(RemoteConfigError, match="SSH config not found"):
        resolve_endpoint(_remote(), ssh_config_path=tmp_path / "nope")


def _keypair(tmp_path: Path, name: str) -> paramiko.PKey:
    path = tmp_path / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    kind, blob = path.with_suffix(".pub").read_text().split()[:2]
    return paramiko.PKey.from_type_string(kind, base64.b64decode(blob))


def test_host_key_check_plain_hashed_unknown_changed(tmp_path: Path) -> None:
    key = _keypair(tmp_path, "hk")
    other = _keypair(tmp_path, "other")
    kh = tmp_path / "known_hosts"
    kh.write_text(
        f"[h.example]:2200 {key.get_name()} {key.get_base64()}\nplain.example {key.get_name()} {key.get_base64()}\n"
    )
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(kh)], check=True, capture_output=True)
    assert "h.example" not in kh.read_text()  # hashed
    remote = _remote(host="h.example", port=2200)
    empty_cfg = tmp_path / "empty"
    empty_cfg.write_text("")
    ep = resolve_endpoint(remote, ssh_config_path=empty_cfg, known_hosts=kh)
    check = HostKeyCheck(ep.known_hosts_files)
    check.verify(ep, key)
    assert check.preferred_types(ep) == ["ssh-ed25519"]
    check.verify(
        resolve_endpoint(_remote(host="plain.example"), ssh_config_path=empty_cfg, known_hosts=kh), key
    )
    with pytest.raises(RemoteUnavailableError, match="HOST KEY CHANGED") as changed:
        check.verify(ep, other)
    assert fingerprint(other) in str(changed.value) and fingerprint(key) in str(changed.value)
    unknown = resolve_endpoint(_remote(host="new.example"), ssh_config_path=empty_cfg, known_hosts=kh)
    with pytest.raises(RemoteUnavailableError) as info:
        check.verify(unknown, key)
    assert f"ssh-keyscan new.example >> {kh}" in str(info.value)
    assert fingerprint(key).startswith("SHA256:") and fingerprint(key) in str(info.value)


def test_known_hosts_patterns_markers_and_bad_lines(tmp_path: Path) -> None:
    from usrbatch.transport.ssh_known_hosts import host_matches, read_known_hosts

    assert host_matches("*.bu.edu,!scc-globus.bu.edu", "scc1.bu.edu")
    assert not host_matches("*.bu.edu,!scc-globus.bu.edu", "scc-globus.bu.edu")
    assert host_matches("[h.example]:2200", "[h.example]:2200")  # brackets are literal, not a class
    assert not host_matches("[h.example]:2200", "h")
    assert host_matches("scc?.BU.edu", "scc1.bu.edu") and not host_matches("scc?.bu.edu", "scc12.bu.edu")
    key = _keypair(tmp_path, "hk")
    kh = tmp_path / "known_hosts"
    kh.write_text(
        "\n".join(
            [
                "# comment",
                f"@revoked * {key.get_name()} {key.get_base64()}",
                f"@cert-authority *.bu.edu {key.get_name()} {key.get_base64()}",
                f"@bogus h {key.get_name()} {key.get_base64()}",  # unknown marker: skipped
                "h ssh-ed25519 not-base64!!",  # bad key: skipped
                "h ssh-unknown AAAA",  # unknown type: skipped
                "too few",
                f"plain.example {key.get_name()} {key.get_base64()} comment words",
            ]
        )
    )
    lines = read_known_hosts(kh)
    assert [(x.lineno, x.marker, x.patterns) for x in lines] == [
        (2, "@revoked", "*"),
        (3, "@cert-authority", "*.bu.edu"),
        (8, "", "plain.example"),
    ]
    (tmp_path / "empty").write_text("")
    ep = resolve_endpoint(_remote(host="plain.example"), ssh_config_path=tmp_path / "empty", known_hosts=kh)
    with pytest.raises(RemoteUnavailableError, match=r"^REVOKED HOST KEY for plain.example"):
        HostKeyCheck(ep.known_hosts_files).verify(ep, key)


def test_ssh_config_permission_rule(tmp_path: Path, ssh_config: Path) -> None:
    ssh_config.chmod(0o620)
    with pytest.raises(RemoteConfigError, match="mode 0620 is writable by group/others") as info:
        resolve_endpoint(_remote(), ssh_config_path=ssh_config)
    assert info.value.hint == f"Fix it with: chmod go-w {ssh_config}"
    assert resolve_endpoint(_remote(), ssh_config_path=ssh_config, check_permissions=False).port == 2200
