"""Start-up import boundary: `usr`/`usrbatch` `--help` and `--version` import no heavy library, a
command imports pyarrow only when it reads parquet and paramiko only when it uses ssh. Each case runs
the real CLI entry point in a fresh interpreter and reports `sys.modules` (no timing asserted; the
times are in docs/benchmarks.md)."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from builders import make_dataset

from usrbatch.cli import (
    data_cmds,
    events_cmds,
    ls_cmds,
    namespace_cmds,
    remotes_cmds,
    sync_cmds,
    usr_main,
    usrbatch_main,
)
from usrbatch.cli.lazy import LazyGroup, load_command

HEAVY = ("pyarrow", "paramiko", "structlog", "yaml", "rich", "numpy", "jinja2")

PROBE = """
import json, sys
from usrbatch.cli import {module} as cli
try:
    cli.main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
heavy = sorted(m for m in {heavy!r} if m in sys.modules)
print("@@" + json.dumps({{"code": code, "heavy": heavy}}))
"""


def probe(module: str, *args: str, env: dict[str, str] | None = None) -> tuple[int, list[str], str]:
    """Run `module.main(args)` in a fresh interpreter: (exit code, heavy modules imported, output)."""
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module, heavy=HEAVY), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )
    marker = [line for line in proc.stdout.splitlines() if line.startswith("@@")]
    assert marker, f"probe printed no result: {proc.stdout[-2000:]} {proc.stderr[-2000:]}"
    got = json.loads(marker[-1][2:])
    return got["code"], got["heavy"], proc.stdout


@pytest.mark.parametrize(
    ("module", "args", "expect"),
    [
        ("usr_main", ["--version"], "usr, version"),
        ("usr_main", ["--help"], "Commands:"),
        ("usrbatch_main", ["--version"], "usrbatch, version"),
        ("usrbatch_main", ["--help"], "Commands:"),
    ],
)
def test_help_and_version_import_no_heavy_library(module: str, args: list[str], expect: str) -> None:
    code, heavy, out = probe(module, *args)
    assert code == 0
    assert expect in out
    assert heavy == []


def test_remotes_list_imports_neither_pyarrow_nor_paramiko(tmp_path: Path) -> None:
    cfg = tmp_path / "remotes.yaml"
    cfg.write_text(f"remotes:\n  hpc:\n    type: local\n    base_dir: {tmp_path / 'remote'}\n")
    code, heavy, out = probe("usr_main", "--remotes-config", str(cfg), "remotes", "list")
    assert code == 0
    assert "hpc" in out
    assert "pyarrow" not in heavy
    assert "paramiko" not in heavy


def local_remote(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A dataset on a `local` remote, an empty local root and the remotes.yaml naming the remote."""
    remote = tmp_path / "remote"
    make_dataset(remote, "densegen/demo")
    (tmp_path / "local").mkdir()
    cfg = tmp_path / "remotes.yaml"
    cfg.write_text(f"remotes:\n  hpc:\n    type: local\n    base_dir: {remote}\n")
    return tmp_path / "local", remote, cfg


def test_local_remote_diff_never_imports_paramiko(tmp_path: Path) -> None:
    local, _remote, cfg = local_remote(tmp_path)
    argv = ["--root", str(local), "--remotes-config", str(cfg), "diff", "densegen/demo", "hpc"]
    code, heavy, out = probe("usr_main", *argv, env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert code == 0, out
    assert "Status" in out
    assert "paramiko" not in heavy


def test_events_tail_reads_the_log_without_pyarrow(tmp_path: Path) -> None:
    make_dataset(tmp_path, "densegen/demo")
    code, heavy, out = probe("usr_main", "--root", str(tmp_path), "events", "tail", "densegen/demo")
    assert code == 0, out
    assert "import_rows" in out
    assert "pyarrow" not in heavy


def test_ls_lists_datasets_without_pyarrow(tmp_path: Path) -> None:
    make_dataset(tmp_path, "densegen/demo")
    code, heavy, out = probe("usr_main", "--root", str(tmp_path), "ls")
    assert code == 0, out
    assert "densegen/demo" in out
    assert "pyarrow" not in heavy


def test_data_command_that_reads_parquet_does_import_pyarrow(tmp_path: Path) -> None:
    """The boundary is real: a command that reads parquet still gets pyarrow when it runs."""
    make_dataset(tmp_path, "densegen/demo")
    code, heavy, out = probe("usr_main", "--root", str(tmp_path), "info", "densegen/demo")
    assert code == 0, out
    assert "pyarrow" in heavy


@pytest.mark.parametrize("command", ["pull", "push", "diff"])
def test_sync_command_help_loads_no_parquet_ssh_or_log_library(command: str) -> None:
    code, heavy, out = probe("usr_main", command, "--help")
    assert code == 0
    assert "--verify" in out
    assert set(heavy) <= {"yaml"}  # the command module reads remotes.yaml; nothing else heavy


def test_pull_with_nothing_to_do_loads_no_parquet_ssh_or_log_library(tmp_path: Path) -> None:
    """A bootstrap pull (every file transferred, payload checked) and then a no-op pull, without an
    audit log: neither reads parquet with pyarrow, uses paramiko, or loads structlog or rich."""
    local, remote, cfg = local_remote(tmp_path)
    argv = ["--root", str(local), "--remotes-config", str(cfg), "pull", "densegen/demo", "hpc", "-y"]
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "USRBATCH_AUDIT_LOG": "", "USRBATCH_LOG_CONSOLE": ""}
    code, heavy, out = probe("usr_main", *argv, env=env)
    assert code == 0, out
    assert "Pull complete." in out
    assert (local / "densegen/demo/records.parquet").read_bytes() == (
        remote / "densegen/demo/records.parquet"
    ).read_bytes()
    assert heavy == ["yaml"]
    code, heavy, out = probe("usr_main", *argv, env=env)
    assert code == 0, out
    assert "Already up to date." in out
    assert heavy == ["yaml"]


def test_audit_log_loads_structlog_without_rich_and_still_writes_every_line(tmp_path: Path) -> None:
    local, _remote, cfg = local_remote(tmp_path)
    log = tmp_path / "audit.jsonl"
    argv = ["--root", str(local), "--remotes-config", str(cfg), "pull", "densegen/demo", "hpc", "-y"]
    env = {
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "USRBATCH_AUDIT_LOG": str(log),
        "USRBATCH_LOOP_ID": "L7",
    }
    code, heavy, out = probe("usr_main", *argv, env=env)
    assert code == 0, out
    assert "structlog" in heavy
    assert "rich" not in heavy
    assert "pyarrow" not in heavy
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert "sync.verified" in {e["event"] for e in events}
    assert all(e["dataset"] == "densegen/demo" and e["loop_id"] == "L7" for e in events)


@pytest.mark.sshd
def test_openssh_remote_never_loads_paramiko_or_pyarrow(
    sshd_server, control_dir: Path, tmp_path: Path
) -> None:
    """With the openssh transport, `diff`, `remotes status`, a pull that copies every file and a
    no-op pull import neither paramiko nor pyarrow; the same diff over `transport: paramiko` does
    import paramiko (the probe sees a real import)."""
    remote = tmp_path / "remote"
    make_dataset(remote, "densegen/demo")
    local = tmp_path / "local"
    local.mkdir()
    cfg = tmp_path / "remotes.yaml"
    cfg.write_text(
        "remotes:\n"
        + "".join(
            f"  {name}:\n    type: ssh\n    host: {sshd_server.alias}\n    user: {sshd_server.user}\n"
            f"    base_dir: '{remote}'\n    transport: {backend}\n"
            for name, backend in (("hpc", "openssh"), ("hpc-paramiko", "paramiko"))
        )
    )
    env = {
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "USRBATCH_SSH_CONFIG": str(sshd_server.ssh_config),
        "USRBATCH_CONTROL_DIR": str(control_dir),
        "USRBATCH_AUDIT_LOG": "",
    }
    top = ["--root", str(local), "--remotes-config", str(cfg)]

    def run(*argv: str) -> tuple[list[str], str]:
        code, heavy, out = probe("usr_main", *top, *argv, env=env)
        assert code == 0, out
        assert "pyarrow" not in heavy
        return heavy, out

    heavy, out = run("diff", "densegen/demo", "hpc")
    assert "CHANGES" in out
    assert "paramiko" not in heavy
    heavy, out = run("remotes", "status", "hpc")
    assert "Control socket: live" in out  # diff left a live master
    assert "paramiko" not in heavy
    heavy, out = run("pull", "densegen/demo", "hpc", "-y")
    assert "Pull complete." in out
    assert (local / "densegen/demo/records.parquet").read_bytes() == (
        remote / "densegen/demo/records.parquet"
    ).read_bytes()
    assert "paramiko" not in heavy
    heavy, out = run("pull", "densegen/demo", "hpc", "-y")
    assert "Already up to date." in out
    assert "paramiko" not in heavy
    heavy, out = run("diff", "densegen/demo", "hpc-paramiko")
    assert "up-to-date" in out
    assert "paramiko" in heavy


def registered(module: object) -> dict[str, click.Command]:
    group = click.Group()
    module.register(group)  # type: ignore[attr-defined]
    return dict(group.commands)


def first_paragraph(command: click.Command) -> str:
    return inspect.cleandoc(command.help or "").split("\n\n")[0].replace("\n", " ")


def test_usr_lazy_table_matches_every_registered_command() -> None:
    """Every command a module registers is in the lazy table, pointing at that object, same summary."""
    want: dict[str, click.Command] = {}
    for module in (data_cmds, ls_cmds, namespace_cmds, events_cmds, sync_cmds, remotes_cmds):
        want.update(registered(module))
    assert set(usr_main.COMMANDS) == set(want)
    for name, entry in usr_main.COMMANDS.items():
        assert load_command(entry.target) is want[name], name
        assert entry.summary == first_paragraph(want[name]), name


def test_usrbatch_lazy_table_matches_the_monitor_commands() -> None:
    for name, entry in usrbatch_main.LAZY_COMMANDS.items():
        command = load_command(entry.target)
        assert command.name == name
        assert entry.summary == first_paragraph(command)


@pytest.mark.parametrize("group", [usr_main.usr, usrbatch_main.usrbatch])
@pytest.mark.parametrize("width", [50, 80, 200])
def test_lazy_help_is_what_the_loaded_commands_print(group: LazyGroup, width: int) -> None:
    """`--help` listed from the table equals the listing click makes once every command is loaded."""
    fresh = LazyGroup(name=group.name, lazy=group.lazy, help=group.help, params=group.params)
    for name, command in group.commands.items():
        if name not in group.lazy:
            fresh.add_command(command, name)

    def render() -> str:
        with click.Context(fresh, info_name=group.name, terminal_width=width) as ctx:
            return fresh.get_help(ctx)

    lazy_text = render()
    assert not set(fresh.lazy) & set(fresh.commands)  # nothing was imported to list them
    with click.Context(fresh) as ctx:
        for name in fresh.lazy:
            assert fresh.get_command(ctx, name) is not None
    assert render() == lazy_text
    for name in fresh.lazy:
        assert name in lazy_text
