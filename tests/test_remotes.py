"""remotes.yaml: location rules, parsing, validation messages, atomic saving."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from usrbatch.errors import RemoteConfigError
from usrbatch.remotes import RemoteConfig, get_remote, load_remotes, remotes_path, save_remote

REPO = Path(__file__).resolve().parents[1]


def _write(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_path_requires_flag_or_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("USR_REMOTES_PATH", raising=False)
    with pytest.raises(
        RemoteConfigError, match=r"^USR_REMOTES_PATH is required for remotes configuration\.$"
    ):
        remotes_path()
    monkeypatch.setenv("USR_REMOTES_PATH", str(tmp_path / "env.yaml"))
    assert remotes_path() == tmp_path / "env.yaml"
    assert remotes_path(tmp_path / "flag.yaml") == tmp_path / "flag.yaml"


def test_missing_file_is_not_created(tmp_path: Path) -> None:
    cfg = tmp_path / "remotes.yaml"
    with pytest.raises(RemoteConfigError) as info:
        load_remotes(cfg)
    assert str(info.value) == (
        f"Remote config not found: {cfg}. Copy remotes.example.yaml to a private path and select it "
        "with --remotes-config or USR_REMOTES_PATH."
    )
    assert not cfg.exists()
    with pytest.raises(RemoteConfigError, match="Remote config not found"):
        save_remote(RemoteConfig(name="x", type="local", base_dir="/d"), cfg)
    assert not cfg.exists()


def test_example_file_parses() -> None:
    remotes = load_remotes(REPO / "remotes.example.yaml")
    scc = remotes["bu-scc"]
    assert (scc.type, scc.host, scc.user, scc.port, scc.batch_mode) == (
        "ssh",
        "scc1.bu.edu",
        "alice",
        22,
        True,
    )
    assert remotes["scratch"].type == "local"


def test_defaults_and_fields(tmp_path: Path) -> None:
    cfg = _write(tmp_path / "r.yaml", {"remotes": {"a": {"host": "h", "user": "u", "base_dir": "/b"}}})
    remote = get_remote("a", cfg)
    assert remote == RemoteConfig(name="a", type="ssh", base_dir="/b", host="h", user="u")
    assert remote.port == 22 and remote.batch_mode is True and remote.ssh_key_env is None
    assert remote.target == "u@h" and remote.label == "u@h:/b"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"user": "u", "base_dir": "/b"}, "Remote 'a' missing required key: 'host'"),
        ({"host": "h", "base_dir": "/b"}, "Remote 'a' missing required key: 'user'"),
        ({"host": "h", "user": "u"}, "Remote 'a' missing required key: 'base_dir'"),
        ({"type": "local"}, "Remote 'a' missing required key: 'base_dir'"),
        (
            {"type": "rsync", "host": "h"},
            "Remote 'a' has unsupported type 'rsync'. Supported types: ssh, local.",
        ),
        (
            {"host": "h", "user": "u", "base_dir": "/b", "port": "x"},
            "Remote 'a' key 'port' must be an integer",
        ),
        (
            {"host": "h", "user": "u", "base_dir": "/b", "batch_mode": "yes"},
            "Remote 'a' key 'batch_mode' must be true or false",
        ),
    ],
)
def test_validation_messages(tmp_path: Path, entry: dict, message: str) -> None:
    cfg = _write(tmp_path / "r.yaml", {"remotes": {"a": entry}})
    with pytest.raises(RemoteConfigError) as info:
        get_remote("a", cfg)
    assert str(info.value).startswith(message)


def test_unknown_remote_and_unreadable_file(tmp_path: Path) -> None:
    cfg = _write(tmp_path / "r.yaml", {"remotes": {}})
    with pytest.raises(RemoteConfigError) as info:
        get_remote("nope", cfg)
    assert str(info.value) == (
        "Unknown remote 'nope'. Define it with 'usr remotes wizard --preset bu-scc ...' or "
        "'usr remotes add nope --type ssh ...'."
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text("remotes: [unclosed\n")
    with pytest.raises(RemoteConfigError, match=rf"^Failed to read config {bad}: "):
        load_remotes(bad)


def test_ssh_key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    remote = RemoteConfig(name="a", type="ssh", base_dir="/b", host="h", user="u", ssh_key_env="USR_TEST_KEY")
    monkeypatch.delenv("USR_TEST_KEY", raising=False)
    with pytest.raises(
        RemoteConfigError, match=r"^Environment variable 'USR_TEST_KEY' not set \(SSH key path\)\.$"
    ):
        remote.ssh_key_path()
    monkeypatch.setenv("USR_TEST_KEY", "~/keys/id")
    assert remote.ssh_key_path() == Path("~/keys/id").expanduser()


def test_save_rewrites_whole_file_sorted_and_keeps_others(tmp_path: Path) -> None:
    cfg = _write(tmp_path / "r.yaml", {"remotes": {"zeta": {"type": "local", "base_dir": "/z"}}})
    cfg.chmod(0o600)
    remote = RemoteConfig(
        name="alpha", type="ssh", base_dir="/data dir", host="h", user="u", port=2222, batch_mode=False
    )
    assert save_remote(remote, cfg) == cfg
    data = yaml.safe_load(cfg.read_text())
    assert list(data["remotes"]) == ["alpha", "zeta"]
    assert data["remotes"]["alpha"] == {
        "base_dir": "/data dir",
        "batch_mode": False,
        "host": "h",
        "local_repo_root": None,
        "port": 2222,
        "repo_root": None,
        "ssh_key_env": None,
        "type": "ssh",
        "user": "u",
    }
    assert cfg.read_text() == yaml.safe_dump(data, sort_keys=True, default_flow_style=False)
    assert cfg.stat().st_mode & 0o777 == 0o600
    assert get_remote("alpha", cfg) == remote
    assert [p.name for p in tmp_path.iterdir()] == ["r.yaml"]  # no temp file left behind


def test_transport_and_control_persist_keys_are_validated(tmp_path) -> None:
    import pytest

    from usrbatch.errors import RemoteConfigError
    from usrbatch.remotes import parse_remote

    base = {"host": "h", "user": "u", "base_dir": "/b"}
    remote = parse_remote("scc", {**base, "transport": "paramiko", "control_persist": "2h"})
    assert (remote.transport, remote.control_persist) == ("paramiko", 7200)
    assert remote.to_yaml()["transport"] == "paramiko" and remote.to_yaml()["control_persist"] == 7200
    plain = parse_remote("scc", base)
    assert plain.transport is None and plain.control_persist is None and "transport" not in plain.to_yaml()
    assert parse_remote("scc", {**base, "control_persist": 600}).control_persist == 600
    cfg = tmp_path / "remotes.yaml"
    with pytest.raises(RemoteConfigError, match=r"remote 'scc' key 'transport' .* Did you mean 'openssh'\?"):
        parse_remote("scc", {**base, "transport": "opnessh"}, cfg)
    for bad in ("soon", "0", -5, True, "30x"):
        with pytest.raises(RemoteConfigError, match="key 'control_persist' must be a positive duration"):
            parse_remote("scc", {**base, "control_persist": bad})
    with pytest.raises(RemoteConfigError, match="Did you mean 'control_persist'"):
        parse_remote("scc", {**base, "control_persists": "10m"})
