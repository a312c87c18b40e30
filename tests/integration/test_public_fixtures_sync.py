"""Datasets the public USR tool wrote, synced through our `usr` CLI over the private sshd: each one
pulls into an empty root byte-identical with every mtime kept, pushes back into another empty
root the same way, and `diff` is up-to-date on both sides afterwards (the public tool compares
meta.md by mtime, so a push that changed mtimes would make it report CHANGES and re-copy)."""

from __future__ import annotations

import hashlib
import io
import os
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
from public_usr import DATASETS, unpack  # noqa: E402

from usrbatch import auditlog  # noqa: E402
from usrbatch.cli.common import run_cli  # noqa: E402
from usrbatch.cli.usr_main import usr  # noqa: E402
from usrbatch.dataset.layout import is_runtime  # noqa: E402

try:
    from .services import SshdServer
except ImportError:  # pytest "prepend" import mode
    from services import SshdServer  # type: ignore[no-redef]


def files_with_mtimes(path: Path) -> dict[str, tuple[str, int]]:
    """{relpath: (sha256, mtime_ns)} of every non-runtime file under a dataset dir."""
    out: dict[str, tuple[str, int]] = {}
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            full = Path(dirpath) / name
            rel = full.relative_to(path).as_posix()
            if not is_runtime(rel):
                out[rel] = (hashlib.sha256(full.read_bytes()).hexdigest(), full.stat().st_mtime_ns)
    return out


@pytest.fixture
def env(sshd_server: SshdServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("USRBATCH_SSH_CONFIG", str(sshd_server.ssh_config))
    monkeypatch.delenv("USRBATCH_AUDIT_LOG", raising=False)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    public = unpack("root", tmp_path / "public")  # the cluster's copy, written by the public tool
    local, back = tmp_path / "local", tmp_path / "back base"
    local.mkdir()
    back.mkdir()
    cfg = tmp_path / "remotes.yaml"
    lines = ["remotes:"]
    for name, base in (("cluster", public), ("backup", back)):
        lines += [
            f"  {name}:",
            "    type: ssh",
            f"    host: {sshd_server.alias}",
            f"    user: {sshd_server.user}",
            f"    base_dir: '{base}'",
        ]
    cfg.write_text("\n".join(lines) + "\n")
    yield {"public": public, "local": local, "back": back, "cfg": cfg}
    auditlog.configure(None)


def usr_cli(env, capsys, *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = run_cli(usr, ["--root", str(env["local"]), "--remotes-config", str(env["cfg"]), *args])
    return code, capsys.readouterr().out


@pytest.mark.parametrize("dataset", DATASETS)
def test_public_dataset_pulls_and_pushes_back_byte_identical_with_mtimes(env, capsys, dataset):
    source = files_with_mtimes(env["public"] / dataset)
    code, out = usr_cli(env, capsys, "pull", dataset, "cluster", "-y")
    assert code == 0, out
    assert files_with_mtimes(env["local"] / dataset) == source
    code, out = usr_cli(env, capsys, "diff", dataset, "cluster")
    assert code == 0 and "Status     : up-to-date" in out.splitlines(), out
    assert "meta.md     mtime: " in out  # the public wording: whole-second mtimes, both sides equal
    meta_line = next(x for x in out.splitlines() if x.startswith("meta.md     mtime: "))
    left, right = meta_line.removeprefix("meta.md     mtime: ").split("  →  ")
    assert left == right == str((env["public"] / dataset / "meta.md").stat().st_mtime_ns // 10**9)

    code, out = usr_cli(env, capsys, "push", dataset, "backup", "-y")
    assert code == 0 and "PUSH audit: TRANSFERRED" in out, out
    assert files_with_mtimes(env["back"] / dataset) == source
    code, out = usr_cli(env, capsys, "diff", dataset, "backup")
    assert code == 0 and "Status     : up-to-date" in out.splitlines(), out
    code, out = usr_cli(env, capsys, "push", dataset, "backup", "-y")
    assert code == 0 and "PUSH audit: NO-OP" in out, out


def test_push_of_a_local_change_keeps_every_mtime_over_ssh(env, capsys):
    """After a local write (attach), the push sends the changed files; each remote copy gets its
    local source's mtime (ns), so meta.md's whole-second mtime agrees for the public `diff` too."""
    ds = "densegen/parts"
    code, out = usr_cli(env, capsys, "pull", ds, "cluster", "-y")
    assert code == 0, out
    local = env["local"] / ds
    (env["local"] / "registry.yaml").write_bytes((env["public"] / "registry.yaml").read_bytes())
    ids = pq.read_table(local / "records.parquet")["id"].to_pylist()
    csv = env["local"].parent / "ll.csv"
    csv.write_text(f"id,infer__ll\n{ids[0]},-3.5\n")
    code, out = usr_cli(env, capsys, "attach", ds, "--path", str(csv), "--namespace", "infer")
    assert code == 0, out
    code, out = usr_cli(env, capsys, "push", ds, "cluster", "-y")
    assert code == 0 and "PUSH audit: TRANSFERRED" in out, out
    assert files_with_mtimes(env["public"] / ds) == files_with_mtimes(local)
    code, out = usr_cli(env, capsys, "diff", ds, "cluster")
    assert "Status     : up-to-date" in out.splitlines(), out
