"""The FILE-mode scenarios of tests/sync/test_filemode.py, run again over SSH against the private
sshd, plus the `usr` CLI in FILE mode over SSH and the round-trip counts.

The same test functions (imported below) get an `fm` fixture whose remote is an `ssh` remote to
directories on this machine; the filemode code path is identical, which is the point.
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sync"))
from test_filemode import *  # noqa: E402,F403
from test_filemode import REL, CorruptUploadedTemp, FileSides, run, sha, temps, write_table  # noqa: E402

from usrbatch import auditlog  # noqa: E402
from usrbatch.cli import sync_cmds  # noqa: E402
from usrbatch.cli.common import run_cli  # noqa: E402
from usrbatch.cli.usr_main import usr  # noqa: E402
from usrbatch.remotes import RemoteConfig  # noqa: E402
from usrbatch.transport.factory import open_transport  # noqa: E402

try:
    from .services import SshdServer
except ImportError:  # pytest "prepend" import mode
    from services import SshdServer  # type: ignore[no-redef]

# Scenarios that only resolve paths (no transport): the local run covers them.
del test_remote_path_is_repo_root_plus_path_under_the_local_repo_root  # noqa: F821
del test_local_repo_root_precedence  # noqa: F821
del test_remote_path_option_forms  # noqa: F821
del test_unsafe_remote_paths_are_refused  # noqa: F821
del test_public_error_messages  # noqa: F821


@pytest.fixture(autouse=True)
def _private_hash_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))


@pytest.fixture(autouse=True)
def _audit_log_to_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "audit.jsonl"
    auditlog.configure(path)
    yield path
    auditlog.configure(None)


@pytest.fixture
def fm(sshd_server: SshdServer, tmp_path: Path, ssh_backend: str) -> FileSides:
    local_repo, remote_repo = tmp_path / "local repo", tmp_path / "remote repo"
    local_repo.mkdir()
    remote_repo.mkdir()
    remote = RemoteConfig(
        name="hpc",
        type="ssh",
        host=sshd_server.alias,
        user=sshd_server.user,
        base_dir=str(tmp_path / "usr_datasets"),
        repo_root=str(remote_repo),
        local_repo_root=str(local_repo),
    )

    def open_ssh(config: RemoteConfig):
        return open_transport(config, ssh_config_path=sshd_server.ssh_config, retries=2, backoff=0.1)

    return FileSides(local_repo, remote_repo, remote, open_ssh)


def test_ssh_round_trips_per_operation(fm: FileSides) -> None:
    """diff = 1 exec (stat); push = stat, apply (temp hash check + rename), stat = 3 execs with
    the data over SFTP; pull = 1 exec (stat), data over SFTP; a no-op = 1 exec."""
    local = fm.local_repo / REL
    write_table(local, 50)
    seen: list = []

    def keep(transport, target):
        seen.append(transport)
        return transport

    run(fm, "diff", local, transport_wrapper=keep)
    run(fm, "push", local, transport_wrapper=keep)
    run(fm, "push", local, transport_wrapper=keep)
    write_table(fm.remote_repo / REL, 70, tag="r")
    run(fm, "pull", local, transport_wrapper=keep)
    assert [t.stats.execs for t in seen] == [1, 3, 1, 1]
    assert seen[1].stats.bytes_up > 0 and seen[3].stats.bytes_down > 0
    assert sha(local) == sha(fm.remote_repo / REL)


# -- the CLI over ssh ---------------------------------------------------------------------------


@pytest.fixture
def cli_env(sshd_server: SshdServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ssh_backend: str):
    monkeypatch.setenv("USRBATCH_SSH_CONFIG", str(sshd_server.ssh_config))
    monkeypatch.delenv("USRBATCH_AUDIT_LOG", raising=False)
    monkeypatch.delenv("DNADESIGN_REPO_ROOT", raising=False)
    local_repo, remote_repo = tmp_path / "repo", tmp_path / "hpc repo"
    local_repo.mkdir()
    remote_repo.mkdir()
    cfg = tmp_path / "remotes.yaml"
    cfg.write_text(
        "remotes:\n  bu-scc:\n    type: ssh\n"
        f"    host: {sshd_server.alias}\n    user: {sshd_server.user}\n    base_dir: '{tmp_path / 'usr'}'\n"
        f"    repo_root: '{remote_repo}'\n    local_repo_root: '{local_repo}'\n"
    )
    yield {"local": local_repo, "remote": remote_repo, "cfg": cfg, "tmp": tmp_path}
    auditlog.configure(None)


def usr_cli(env, capsys, monkeypatch, *args: str, stdin: str = "") -> tuple[int, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = run_cli(usr, ["--root", str(env["tmp"] / "usr"), "--remotes-config", str(env["cfg"]), *args])
    return code, capsys.readouterr().out


def test_cli_file_mode_over_ssh(cli_env, capsys, monkeypatch) -> None:
    local = cli_env["local"] / "outputs" / "densegen.parquet"
    remote = cli_env["remote"] / "outputs" / "densegen.parquet"
    write_table(local, 12)
    code, out = usr_cli(cli_env, capsys, monkeypatch, "diff", str(local), "bu-scc")
    assert code == 0 and "Status     : CHANGES" in out and "Remote : ?  size=?" in out
    code, out = usr_cli(cli_env, capsys, monkeypatch, "push", str(local), "bu-scc", "--dry-run")
    assert code == 0 and "PUSH audit: DRY-RUN" in out and "Push complete." not in out
    assert not (cli_env["remote"] / "outputs").exists()
    audit_path = cli_env["tmp"] / "audit" / "push.json"
    code, out = usr_cli(
        cli_env, capsys, monkeypatch, "push", str(local), "bu-scc", "-y", "--audit-json-out", str(audit_path)
    )
    assert code == 0, out
    assert out.rstrip().endswith("Push complete.")
    assert remote.read_bytes() == local.read_bytes()
    data = json.loads(audit_path.read_text())["data"]
    assert (data["action"], data["transfer_state"], data["dataset"]) == ("push", "TRANSFERRED", str(local))
    assert data["verify"] == {"primary": "hash", "sidecars": "off", "content_hashes": "off"}
    code, out = usr_cli(cli_env, capsys, monkeypatch, "pull", str(local), "bu-scc")
    assert code == 0 and "Already up to date." in out.splitlines() and "PULL audit: NO-OP" in out
    write_table(remote, 3, tag="hpc")
    code, out = usr_cli(
        cli_env, capsys, monkeypatch, "pull", str(local), "bu-scc", "--verify", "parquet", "-y"
    )
    assert code == 0, out
    assert local.read_bytes() == remote.read_bytes()
    assert "Remote : " in out and "rows=3  cols=2" in out
    code, out = usr_cli(cli_env, capsys, monkeypatch, "status", str(local), "bu-scc")
    assert code == 0 and "Status     : up-to-date" in out.splitlines()
    assert temps(cli_env["local"], cli_env["remote"]) == []


def test_cli_file_mode_refusals_over_ssh(cli_env, capsys, monkeypatch, tmp_path: Path) -> None:
    local = cli_env["local"] / "x.parquet"
    write_table(local, 2)
    (cli_env["remote"] / "x.parquet").symlink_to(tmp_path / "cfg-target.parquet")
    code, out = usr_cli(cli_env, capsys, monkeypatch, "push", str(local), "bu-scc", "-y")
    assert code == 2 and out.startswith("ERROR: Remote path is a symlink: ")
    assert not (tmp_path / "cfg-target.parquet").exists()
    code, out = usr_cli(
        cli_env, capsys, monkeypatch, "pull", str(local), "bu-scc", "--no-verify-derived-hashes"
    )
    assert code == 2
    assert out.startswith(
        "ERROR: --no-verify-derived-hashes is a dataset-only flag (not valid in FILE mode)."
    )
    code, out = usr_cli(
        cli_env, capsys, monkeypatch, "push", str(local), "bu-scc", "--remote-path", "/srv/../etc/passwd"
    )
    assert code == 2 and "contains '..'" in out


def test_cli_corrupted_temp_over_ssh(cli_env, capsys, monkeypatch) -> None:
    local, remote = cli_env["local"] / "y.parquet", cli_env["remote"] / "y.parquet"
    old = write_table(remote, 2, tag="old")
    write_table(local, 9)
    real_open = sync_cmds.open_file_remote

    def corrupting(target):
        return CorruptUploadedTemp(real_open(target), target)

    monkeypatch.setattr(sync_cmds, "open_file_remote", corrupting)
    code, out = usr_cli(cli_env, capsys, monkeypatch, "push", str(local), "bu-scc", "-y")
    assert code == 2, out
    assert "\nERROR: post-push-file: Remote apply on " in out and "does not match" in out
    assert remote.read_bytes() == old
    assert temps(cli_env["remote"]) == []
