"""`usr remotes list|show|add|wizard|doctor` output formats and errors (no network needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from usrbatch.cli.common import run_cli
from usrbatch.cli.usr_main import usr


def _usr(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = run_cli(usr, list(argv))
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "remotes.yaml"
    path.write_text("remotes: {}\n")
    monkeypatch.setenv("USR_REMOTES_PATH", str(path))
    return path


def test_list_empty_then_add_ssh_and_local(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _usr(capsys, "remotes", "list") == (0, "(no remotes configured)\n")
    code, out = _usr(
        capsys, "remotes", "add", "scc", "--host", "scc1.bu.edu", "--user", "alice", "--base-dir", "/proj/usr"
    )
    assert (code, out) == (0, f"Saved remote 'scc' to {cfg}\n")
    code, out = _usr(
        capsys,
        "remotes",
        "add",
        "lab",
        "--type",
        "ssh",
        "--host",
        "h",
        "--user",
        "bob",
        "--base-dir",
        "/d",
        "--no-batch-mode",
        "--port",
        "2222",
        "--ssh-key-env",
        "LAB_KEY",
    )
    assert code == 0
    assert _usr(capsys, "remotes", "add", "scratch", "--type", "local", "--base-dir", "/scratch/x")[0] == 0
    code, out = _usr(capsys, "remotes", "list")
    assert code == 0
    assert out.splitlines() == [
        f"{'lab':<20} ssh bob@h  base_dir=/d  auth=interactive-auth",
        f"{'scc':<20} ssh alice@scc1.bu.edu  base_dir=/proj/usr  auth=batch",
        f"{'scratch':<20} local  base_dir=/scratch/x",
    ]
    saved = yaml.safe_load(cfg.read_text())["remotes"]["lab"]
    assert saved["port"] == 2222 and saved["batch_mode"] is False and saved["ssh_key_env"] == "LAB_KEY"
    assert saved["repo_root"] is None and saved["local_repo_root"] is None


def test_show(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _usr(capsys, "remotes", "add", "scc", "--host", "scc1.bu.edu", "--user", "alice", "--base-dir", "/p")
    code, out = _usr(capsys, "remotes", "show", "scc")
    assert code == 0
    assert out.splitlines() == [
        "name     : scc",
        "type     : ssh",
        "ssh      : alice@scc1.bu.edu",
        "port     : 22",
        "base_dir : /p",
        "batch    : yes",
        "ssh_key  : (ssh-agent or default key)",
    ]
    code, out = _usr(capsys, "remotes", "show", "nope")
    assert code == 2
    assert out == (
        "ERROR: Unknown remote 'nope'. Define it with 'usr remotes wizard --preset bu-scc ...' or "
        "'usr remotes add nope --type ssh ...'.\n"
    )


def test_add_and_wizard_save_file_mode_roots_and_pull_uses_them(
    cfg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--repo-root/--local-repo-root are saved, shown, and used by a FILE-mode pull."""
    monkeypatch.delenv("DNADESIGN_REPO_ROOT", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cluster, laptop = tmp_path / "cluster-repo", tmp_path / "laptop-repo"
    (cluster / "data").mkdir(parents=True)
    pq.write_table(pa.table({"x": [1, 2, 3]}), cluster / "data" / "table.parquet")
    (laptop / "data").mkdir(parents=True)
    code, _ = _usr(
        capsys,
        "remotes", "add", "shared", "--type", "local", "--base-dir", str(tmp_path / "usr"),
        "--repo-root", str(cluster), "--local-repo-root", str(laptop),
    )  # fmt: skip
    assert code == 0
    saved = yaml.safe_load(cfg.read_text())["remotes"]["shared"]
    assert saved["repo_root"] == str(cluster) and saved["local_repo_root"] == str(laptop)
    code, out = _usr(capsys, "remotes", "show", "shared")
    assert code == 0
    assert out.splitlines()[-2:] == [f"repo_root: {cluster}", f"local_repo_root: {laptop}"]
    code, out = _usr(
        capsys, "pull", str(laptop / "data" / "table.parquet"), "shared", "-y", "--verify", "hash"
    )
    assert code == 0, out
    assert (laptop / "data" / "table.parquet").read_bytes() == (
        cluster / "data" / "table.parquet"
    ).read_bytes()
    code, _ = _usr(
        capsys,
        "remotes", "wizard", "--preset", "bu-scc", "--user", "alice", "--base-dir", "/projectnb/lab/usr",
        "--repo-root", "/projectnb/lab/repo", "--local-repo-root", str(laptop),
    )  # fmt: skip
    assert code == 0
    saved = yaml.safe_load(cfg.read_text())["remotes"]["bu-scc"]
    assert saved["repo_root"] == "/projectnb/lab/repo" and saved["local_repo_root"] == str(laptop)


def test_add_requires_host_and_user_for_ssh_and_changes_nothing(
    cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = cfg.read_text()
    code, out = _usr(capsys, "remotes", "add", "x", "--user", "u", "--base-dir", "/d")
    assert code == 2 and out.startswith("ERROR: --host is required for --type ssh.")
    assert cfg.read_text() == before


def test_wizard_saves_and_prints_snippet(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _usr(
        capsys, "remotes", "wizard", "--preset", "bu-scc", "--user", "alice", "--base-dir", "/proj/a"
    )
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"Saved remote 'bu-scc' to {cfg}"
    for expected in (
        "Host bu-scc",
        "    HostName scc1.bu.edu",
        "    User alice",
        "    IdentitiesOnly yes",
        "    AddKeysToAgent yes",
        "    ServerAliveInterval 60",
        "    ServerAliveCountMax 2",
    ):
        assert expected in lines
    code, out = _usr(
        capsys,
        "remotes",
        "wizard",
        "--preset",
        "bu-scc",
        "--name",
        "scc-xfer",
        "--user",
        "alice",
        "--base-dir",
        "/proj/a",
        "--transfer-node",
    )
    assert code == 0 and "    HostName scc-globus.bu.edu" in out.splitlines()
    remotes = yaml.safe_load(cfg.read_text())["remotes"]
    # remotes.yaml names the Host alias of the printed block, so the user's ssh config applies.
    assert remotes["bu-scc"]["host"] == "bu-scc" and remotes["scc-xfer"]["host"] == "scc-xfer"
    code, out = _usr(capsys, "remotes", "wizard", "--preset", "mit", "--user", "a", "--base-dir", "/p")
    assert (code, out) == (2, "ERROR: Unsupported preset 'mit'. Supported presets: bu-scc.\n")


def test_config_location_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("USR_REMOTES_PATH", raising=False)
    code, out = _usr(capsys, "remotes", "list")
    assert code == 2 and out.startswith("ERROR: USR_REMOTES_PATH is required for remotes configuration.\n")
    missing = tmp_path / "nope.yaml"
    code, out = _usr(
        capsys, "--remotes-config", str(missing), "remotes", "add", "x", "--type", "local", "--base-dir", "/d"
    )
    assert code == 2 and out.startswith(
        f"ERROR: Remote config not found: {missing}. Copy remotes.example.yaml"
    )
    assert not missing.exists()


def test_remotes_config_flag_works_without_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("USR_REMOTES_PATH", raising=False)
    path = tmp_path / "r.yaml"
    path.write_text("remotes:\n  a: {type: local, base_dir: /x}\n")
    try:
        code, out = _usr(capsys, "--remotes-config", str(path), "remotes", "list")
    finally:
        os.environ.pop("USR_REMOTES_PATH", None)  # the group exports it for the process
    assert code == 0 and out == f"{'a':<20} local  base_dir=/x\n"


def test_doctor_local_remote(cfg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = tmp_path / "local base"
    base.mkdir()
    _usr(capsys, "remotes", "add", "here", "--type", "local", "--base-dir", str(base))
    code, out = _usr(capsys, "remotes", "doctor", "--remote", "here")
    assert code == 0, out
    lines = out.splitlines()
    assert lines[1].startswith("config: ok") and lines[2] == "permissions: ok (remotes.yaml)"
    assert lines[3].startswith("base_dir: ok")
    assert lines[4].startswith("flock: ok") and lines[-1] == "Doctor checks passed."
    assert list(base.iterdir()) == []
    _usr(capsys, "remotes", "add", "gone", "--type", "local", "--base-dir", str(tmp_path / "absent"))
    code, out = _usr(capsys, "remotes", "doctor", "--remote", "gone")
    assert code == 2 and f"ERROR: Local base_dir does not exist: {tmp_path / 'absent'}" in out
    assert "Doctor checks passed." not in out


def test_wizard_creates_a_missing_remotes_file_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "new-dir" / "usr" / "remotes.yaml"
    monkeypatch.setenv("USR_REMOTES_PATH", str(path))
    code, out = _usr(
        capsys, "remotes", "wizard", "--preset", "bu-scc", "--user", "alice", "--base-dir", "/proj/a"
    )
    assert code == 0, out
    assert out.splitlines()[:2] == [f"Created {path} (mode 0600)", f"Saved remote 'bu-scc' to {path}"]
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert yaml.safe_load(path.read_text())["remotes"]["bu-scc"]["host"] == "bu-scc"
    code, out = _usr(capsys, "remotes", "show", "bu-scc")  # the created file passes the trust rule
    assert code == 0 and "ssh      : alice@bu-scc" in out


def test_remotes_file_writable_by_others_is_refused_with_the_fix(
    cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg.write_text("remotes:\n  a: {type: local, base_dir: /x}\n")
    cfg.chmod(0o664)
    code, out = _usr(capsys, "remotes", "list")
    assert code == 2
    assert out.splitlines() == [
        f"ERROR: Refusing remotes.yaml {cfg}: Bad owner or permissions: mode 0664 is writable by group/others "
        "(whoever can write it decides where you connect).",
        f"Hint: Fix it with: chmod go-w {cfg}",
    ]
    code, out = _usr(capsys, "remotes", "doctor", "--remote", "a")
    assert code == 2
    assert f"permissions: FAILED (remotes.yaml {cfg}: Bad owner or permissions" in out
    assert f"Hint: Fix with: chmod go-w {cfg}" in out
    cfg.chmod(0o644)
    assert _usr(capsys, "remotes", "list")[0] == 0


def test_unknown_remotes_keys_name_file_remote_and_suggestion(
    cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg.write_text("remotes:\n  lab:\n    host: h\n    user: u\n    base_dir: /d\n    bach_mode: false\n")
    code, out = _usr(capsys, "remotes", "list")
    assert code == 2
    assert out.startswith(
        f"ERROR: {cfg}: remote 'lab': unknown key 'bach_mode'. Did you mean 'batch_mode'? Known keys: "
    )
    cfg.write_text("remote:\n  lab: {host: h, user: u, base_dir: /d}\n")
    code, out = _usr(capsys, "remotes", "list")
    assert code == 2 and out.startswith(f"ERROR: {cfg}: unknown key 'remote'. Did you mean 'remotes'?")
    cfg.write_text("remotes:\n  s: {type: local, base_dir: /d, host: h}\n")
    code, out = _usr(capsys, "remotes", "show", "s")
    assert code == 2
    assert out.splitlines()[0] == (
        f"ERROR: {cfg}: remote 's': key 'host' applies to ssh remotes only; this remote is type local."
    )


def test_status_and_close_without_a_live_login(
    cfg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No master yet: status says absent and what to do, close says there was none; a paramiko
    remote has no master, a local one is not listed; warm-auth on them says why not."""
    import json

    cm = tmp_path / "cm"
    monkeypatch.setenv("USRBATCH_CONTROL_DIR", str(cm))
    monkeypatch.setenv("USRBATCH_SSH_TRANSPORT", "openssh")
    cfg.write_text(
        "remotes:\n"
        "  scc: {type: ssh, host: scc1.bu.edu, user: alice, base_dir: /p, batch_mode: false, control_persist: 10m}\n"
        "  old: {type: ssh, host: h, user: bob, base_dir: /q, transport: paramiko}\n"
        f"  here: {{type: local, base_dir: {tmp_path}}}\n"
    )
    code, out = _usr(capsys, "remotes", "status", "scc", "--json")
    assert code == 0, out
    data = json.loads(out)
    assert (data["remote"], data["transport"], data["socket_live"], data["socket_exists"]) == (
        "scc",
        "openssh",
        False,
        False,
    )
    assert data["control_persist_s"] == 600 and data["control_path"].startswith(str(cm) + "/cm-")
    assert (
        data["recommendation"]
        == "run `usr remotes warm-auth scc` in a terminal to log in once for this session"
    )
    assert (cm.stat().st_mode & 0o777) == 0o700
    code, out = _usr(capsys, "remotes", "status")
    assert code == 0 and "Control socket: absent" in out and "Transport     : paramiko" in out
    assert "here" not in out
    code, out = _usr(capsys, "remotes", "status", "--json")
    assert [r["remote"] for r in json.loads(out)["remotes"]] == ["old", "scc"]
    assert _usr(capsys, "remotes", "close", "scc") == (0, "No live SSH login for remote 'scc'.\n")
    code, out = _usr(capsys, "remotes", "warm-auth", "old")
    assert (
        code == 2
        and "ERROR: Remote 'old' uses transport: paramiko" in out
        and "Hint: Set `transport: openssh`" in out
    )
    code, out = _usr(capsys, "remotes", "warm-auth", "here")
    assert code == 2 and "ERROR: Remote 'here' is type local: it has no SSH login." in out
