"""FILE mode over SSH only: round trips per operation and the `usr` CLI in FILE mode over SSH.

The FILE-mode scenarios themselves (tests/sync/test_filemode.py) run over both local and ssh
through the `fm` fixture of tests/sync/conftest.py; this module's own `fm` is the ssh one.
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sides import FileSides
from test_filemode import REL, CorruptUploadedTemp, run, sha, temps, write_table

from usrbatch import auditlog
from usrbatch.cli import sync_cmds
from usrbatch.cli.common import run_cli
from usrbatch.cli.usr_main import usr
from usrbatch.remotes import RemoteConfig
from usrbatch.transport.factory import open_transport

try:
    from .services import SshdServer
except ImportError:  # pytest "prepend" import mode
    from services import SshdServer  # type: ignore[no-redef]


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
    """diff = 1 exec (stat); push = stat, upload stream (bytes + remote hash), apply (cached temp
    hash check + rename), stat = 4 execs; pull = stat + download stream = 2 execs; a no-op =
    1 exec; no SFTP session anywhere."""
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
    assert [t.stats.execs for t in seen] == [1, 4, 1, 2]
    assert [t.stats.sftp_sessions for t in seen] == [0, 0, 0, 0]
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


def test_dropped_push_leaves_a_content_named_temp_that_the_next_push_resumes(
    fm: FileSides, sshd_server: SshdServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The link dies half-way through a FILE-mode push (a TCP proxy goes down mid-upload, so not
    even the best-effort cleanup reaches the remote): the old remote file is whole, the partial
    temp carries the content's name, and the next push sends only the missing tail, renames it
    into place and leaves no temp (the same policy as a dataset push, sync/temps.py)."""
    import dataclasses
    import hashlib
    import os

    from usrbatch.errors import TransferError
    from usrbatch.sync import filemode
    from usrbatch.transport.ssh import SshTransport

    try:
        from .tcp_proxy import TcpProxy
    except ImportError:  # pytest "prepend" import mode
        from tcp_proxy import TcpProxy  # type: ignore[no-redef]

    size = 16 * 1024 * 1024
    local, remote = fm.local_repo / "big.bin", fm.remote_repo / "big.bin"
    local.write_bytes(os.urandom(size))
    remote.write_bytes(b"the old remote file")
    digest = hashlib.sha256(local.read_bytes()).hexdigest()
    with TcpProxy(sshd_server.host, sshd_server.port) as proxy:
        kind, blob = sshd_server.host_key_pub.read_text().split()[:2]
        known = tmp_path / "known_hosts"
        known.write_text(f"[127.0.0.1]:{proxy.port} {kind} {blob}\n")
        (tmp_path / "empty_ssh_config").write_text("")
        monkeypatch.setenv("USRBATCH_TEST_SSH_KEY", str(sshd_server.client_key))
        via_proxy = dataclasses.replace(
            fm.remote, host="127.0.0.1", port=proxy.port, ssh_key_env="USRBATCH_TEST_SSH_KEY"
        )
        target = filemode.resolve_file_target(str(local), via_proxy)
        transport = SshTransport(
            target.remote, ssh_config_path=tmp_path / "empty_ssh_config", known_hosts=known, retries=1
        )
        sent, cut = [0], []

        def progress(_total: int):
            def on_bytes(_path: str, n: int) -> None:
                sent[0] += n
                if sent[0] >= size // 2 and not cut:
                    cut.append(sent[0])
                    proxy.go_down()  # the link is gone: no retry, no cleanup gets through

            return on_bytes

        try:
            with pytest.raises(TransferError):
                filemode.push_file(target, transport, progress=progress)
        finally:
            transport.close()
        assert cut
    assert remote.read_bytes() == b"the old remote file"
    left = temps(fm.remote_repo)
    assert [p.name for p in left] == [f".usrbatch-tmp-{digest[:16]}-big.bin"]
    partial = left[0].stat().st_size
    assert 0 < partial < size

    target = filemode.resolve_file_target(str(local), fm.remote)
    transport = fm.open(target.remote)
    try:
        result = filemode.push_file(target, transport)
        assert result.files_sent == 1
        assert transport.stats.resumed == 1
        # Only the missing tail travelled (the remote sftp-server may still have flushed a few
        # in-flight writes after `partial` was measured, so the tail is at most size - partial).
        assert 0 < transport.stats.bytes_up <= size - partial
    finally:
        transport.close()
    assert sha(remote) == digest
    assert temps(fm.remote_repo, fm.local_repo) == []
