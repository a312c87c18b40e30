"""Remote command lines: quoting, the agent bootstrap and the sh fallback, run with a local `sh`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from usrbatch.agent import client
from usrbatch.agent import remote as agent
from usrbatch.transport import ssh_shell
from usrbatch.transport.base import Inventory


def _run(command: str, stdin: bytes) -> tuple[int, str]:
    res = subprocess.run(command, shell=True, input=stdin, capture_output=True, timeout=60)
    return res.returncode, res.stdout.decode()


@pytest.fixture
def nasty_base(tmp_path: Path) -> tuple[Path, Path]:
    pwned = tmp_path / "pwned"
    base = tmp_path / f"b a$(touch {pwned})`touch {pwned}`'\";x"
    ds = base / "n s" / "d$HOME"
    (ds / "_derived").mkdir(parents=True)
    (ds / "records.parquet").write_bytes(b"abc")
    (ds / ".events.log").write_text("1\n2\n")
    (ds / "_derived" / "p 1.parquet").write_bytes(b"p")
    (ds / ".usr.lock").write_text("")
    (ds / "_derived" / ".usrbatch-tmp-x").write_bytes(b"tmp")
    os.symlink("/etc", ds / "link")
    return base, pwned


def test_sh_command_quotes_every_argument() -> None:
    cmd = ssh_shell.sh_command('printf "%s|" "$@"', "a b", "$(x)", "'q'")
    code, out = _run(cmd, b"")
    assert (code, out) == (0, "a b|$(x)|'q'|")
    with pytest.raises(ValueError):
        ssh_shell.sh_command("echo a\necho b")


def test_agent_bootstrap_runs_agent_from_stdin(nasty_base: tuple[Path, Path], tmp_path: Path) -> None:
    base, pwned = nasty_base
    req = {"op": "inventory", "base": str(base), "rel": "n s/d$HOME", "cache_path": str(tmp_path / "c.json")}
    code, out = _run(ssh_shell.agent_command(), client.encode(req))
    data = json.loads(out)
    assert code == 0 and data["ok"] is True
    assert sorted(data["result"]["files"]) == [".events.log", "_derived/p 1.parquet", "records.parquet"]
    assert not pwned.exists()


def test_inventory_command_python_and_sh_agree(nasty_base: tuple[Path, Path], tmp_path: Path) -> None:
    base, pwned = nasty_base
    rel = "n s/d$HOME"
    req = {"op": "inventory", "base": str(base), "rel": rel, "cache_path": str(tmp_path / "c.json")}
    stdin = client.encode(req)
    _code, out = _run(ssh_shell.inventory_command(str(base), rel, True), stdin)
    py = Inventory.from_agent(json.loads(out)["result"])
    code, out = _run(ssh_shell.inventory_command(str(base), rel, True, force_sh=True), stdin)
    assert code == 0 and ssh_shell.SH_MARK in out
    sh = Inventory.from_agent(ssh_shell.parse_sh_inventory(out, True))
    assert sh.files == py.files and sh.rejected == py.rejected == (("link", "symlink"),)
    assert sh.events_lines == py.events_lines == 2
    _code, out = _run(ssh_shell.inventory_command(str(base), "absent", True, force_sh=True), stdin)
    assert ssh_shell.parse_sh_inventory(out, True)["exists"] is False
    assert not pwned.exists()


def test_hash_command_sh_fallback(nasty_base: tuple[Path, Path]) -> None:
    base, _ = nasty_base
    paths = ["n s/d$HOME/records.parquet", "n s/d$HOME/missing", "n s/d$HOME/_derived/.usrbatch-tmp-x"]
    req = {"op": "hash", "base": str(base), "paths": paths}
    _code, out = _run(ssh_shell.hash_command(str(base), paths, force_sh=True), client.encode(req))
    files = ssh_shell.parse_sh_hashes(out)["files"]
    expected = agent.hash_paths(str(base), paths)["files"]
    assert files["n s/d$HOME/records.parquet"] == expected["n s/d$HOME/records.parquet"]
    assert files["n s/d$HOME/_derived/.usrbatch-tmp-x"] == expected["n s/d$HOME/_derived/.usrbatch-tmp-x"]
    assert "n s/d$HOME/missing" not in files


def test_missing_python_is_reported(tmp_path: Path) -> None:
    code, out = _run(ssh_shell.agent_command(force_sh=True), b"")
    assert code == 127 and ssh_shell.NO_PYTHON_MARK in out


def test_truncated_sh_output_is_an_error() -> None:
    with pytest.raises(ValueError):
        ssh_shell.parse_sh_inventory("USRBATCH-SH:files\nf 1 1.0 ./a\n", True)


def test_agent_runs_without_site_yet_probe_still_finds_pyarrow(tmp_path: Path) -> None:
    """The agent starts with -S (no site-packages scan on every exec); only `probe`, which reports
    pyarrow's version, loads site-packages, on demand."""
    import pyarrow

    req = {"op": "probe", "base": str(tmp_path)}
    code, out = _run(ssh_shell.agent_command(python=sys.executable), client.encode(req))
    assert code == 0 and "-S -c" in ssh_shell.agent_command()
    assert json.loads(out.splitlines()[-1])["result"]["pyarrow"] == pyarrow.__version__
