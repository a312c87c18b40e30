"""The runbook's chained loop through the `usr` CLI against an `ssh` remote (the private sshd):
diff → pull → diff → write-back → diff → push → diff, byte-identical at the end; then drill 2."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sync"))
from builders import add_event, make_dataset, tree, write_part, write_records  # noqa: E402

from usrbatch import auditlog  # noqa: E402
from usrbatch.cli.common import run_cli  # noqa: E402
from usrbatch.cli.usr_main import usr  # noqa: E402

try:
    from .services import SshdServer
except ImportError:  # pytest "prepend" import mode
    from services import SshdServer  # type: ignore[no-redef]

DS = "densegen/my_dataset"


@pytest.fixture
def env(sshd_server: SshdServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ssh_backend: str):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("USRBATCH_SSH_CONFIG", str(sshd_server.ssh_config))
    monkeypatch.delenv("USRBATCH_AUDIT_LOG", raising=False)
    local, remote = tmp_path / "local", tmp_path / "hpc base"
    local.mkdir()
    remote.mkdir()
    cfg = tmp_path / "remotes.yaml"
    cfg.write_text(
        "remotes:\n  bu-scc:\n    type: ssh\n"
        f"    host: {sshd_server.alias}\n    user: {sshd_server.user}\n    base_dir: '{remote}'\n"
    )
    yield {"local": local, "remote": remote, "cfg": cfg, "tmp": tmp_path}
    auditlog.configure(None)


def usr_cli(env, capsys, monkeypatch, *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code = run_cli(usr, ["--root", str(env["local"]), "--remotes-config", str(env["cfg"]), *args])
    return code, capsys.readouterr().out


def test_chained_loop_over_ssh(env, capsys, monkeypatch):
    remote = make_dataset(env["remote"], DS)
    code, out = usr_cli(env, capsys, monkeypatch, "diff", DS, "bu-scc")
    assert code == 0 and "Status     : CHANGES" in out
    code, out = usr_cli(env, capsys, monkeypatch, "pull", DS, "bu-scc", "-y")
    assert code == 0, out
    assert out.rstrip().endswith("Pull complete.")
    code, out = usr_cli(env, capsys, monkeypatch, "diff", DS, "bu-scc")
    assert "Status     : up-to-date" in out.splitlines()
    # HPC DenseGen batch, then local Infer write-back.
    write_records(remote / "records.parquet", 8, tag="hpc")
    write_part(remote, "densegen")
    add_event(remote, "import_rows", rows=5)
    code, out = usr_cli(env, capsys, monkeypatch, "pull", DS, "bu-scc", "-y")
    assert code == 0, out
    local = env["local"] / DS
    write_part(local, "infer")
    (local / "_registry" / "registry.abc.yaml").write_text("namespaces: {infer: {}}\n")  # same-name rewrite
    add_event(local, "write_overlay_part", namespace="infer")
    audit_path = env["tmp"] / "push-audit.json"
    code, out = usr_cli(
        env, capsys, monkeypatch, "push", DS, "bu-scc", "-y", "--audit-json-out", str(audit_path)
    )
    assert code == 0, out
    data = json.loads(audit_path.read_text())["data"]
    assert data["transfer_state"] == "TRANSFERRED"
    assert data["_auxiliary"]["changed"] is True and data["_derived"]["local_only"][0].startswith(
        "infer/part-"
    )
    code, out = usr_cli(env, capsys, monkeypatch, "diff", DS, "bu-scc")
    assert "Status     : up-to-date" in out.splitlines()
    assert tree(local) == tree(remote)
    assert (local / ".events.log").read_bytes() == (remote / ".events.log").read_bytes()
    code, out = usr_cli(env, capsys, monkeypatch, "push", DS, "bu-scc", "-y")
    assert "Already up to date." in out.splitlines() and "PUSH audit: NO-OP" in out


def test_branched_history_over_ssh_exits_2(env, capsys, monkeypatch):
    make_dataset(env["remote"], DS)
    usr_cli(env, capsys, monkeypatch, "pull", DS, "bu-scc", "-y")
    add_event(env["local"] / DS, "attach", ns="a")
    add_event(env["remote"] / DS, "attach", ns="b")
    before = tree(env["remote"] / DS)
    code, out = usr_cli(env, capsys, monkeypatch, "push", DS, "bu-scc", "-y")
    assert code == 2
    assert "ERROR: Remote event log is not a prefix of the locked local event log" in out
    assert tree(env["remote"] / DS) == before
