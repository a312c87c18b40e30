"""`usr`: the data-plane CLI. Each command module adds its commands to the group."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from usrbatch import __version__
from usrbatch.cli import data_cmds, remotes_cmds, sync_cmds
from usrbatch.cli.common import UsrContext, resolve_root, run_cli


@click.group(name="usr", context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--root",
    type=click.Path(file_okay=False),
    default=None,
    help="Datasets root (default: $USR_ROOT, else the current directory).",
)
@click.option(
    "--remotes-config",
    type=click.Path(dir_okay=False),
    default=None,
    help="remotes.yaml to use (sets USR_REMOTES_PATH for this process).",
)
@click.option("--rich/--no-rich", default=True, help="Rich terminal rendering where supported.")
@click.option(
    "--log-json",
    type=click.Path(dir_okay=False),
    default=None,
    help="Append structured JSON-lines events here (default: $USRBATCH_AUDIT_LOG).",
)
@click.version_option(__version__, prog_name="usr")
@click.pass_context
def usr(
    ctx: click.Context, root: str | None, remotes_config: str | None, rich: bool, log_json: str | None
) -> None:
    """USR datasets: create, inspect, annotate and sync them."""
    if remotes_config:
        os.environ["USR_REMOTES_PATH"] = str(Path(remotes_config).expanduser().absolute())
    log_path = log_json or os.environ.get("USRBATCH_AUDIT_LOG")
    ctx.obj = UsrContext(
        root=resolve_root(root),
        remotes_config=Path(remotes_config).expanduser().absolute() if remotes_config else None,
        rich=rich,
        log_json=Path(log_path).expanduser().absolute() if log_path else None,
    )


data_cmds.register(usr)
remotes_cmds.register(usr)
sync_cmds.register(usr)


def main(argv: list[str] | None = None) -> None:
    sys.exit(run_cli(usr, argv))


if __name__ == "__main__":
    main()
