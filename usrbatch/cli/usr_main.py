"""`usr`: the data-plane CLI. Each command's module is imported only when that command runs
(usrbatch/cli/lazy.py), so `usr --help` and `usr --version` import neither pyarrow nor paramiko."""

from __future__ import annotations

import os
import sys

import click

from usrbatch import __version__
from usrbatch.cli.common import UsrContext, resolve_root, run_cli
from usrbatch.cli.lazy import LazyCommand, LazyGroup

DATA = "usrbatch.cli.data_cmds"
SYNC = "usrbatch.cli.sync_cmds"
# Every top-level command: where it lives and its help's first paragraph (what `usr --help` lists;
# tests/cli/test_startup_imports.py checks both against each module's register()).
COMMANDS = {
    "namespace": LazyCommand(
        "usrbatch.cli.namespace_cmds:namespace_group",
        "Namespaces in registry.yaml (the columns overlays may write).",
    ),
    "init": LazyCommand(
        f"{DATA}:init_cmd", "Create DATASET (flat `name` or `namespace/name`) under the root."
    ),
    "import": LazyCommand(f"{DATA}:import_cmd", "Append base records (sequences) to DATASET."),
    "attach": LazyCommand(f"{DATA}:attach_cmd", "Attach namespaced overlay columns from a file to DATASET."),
    "head": LazyCommand(
        f"{DATA}:head_cmd", "Show the first rows of DATASET (base + overlays; tombstoned rows hidden)."
    ),
    "info": LazyCommand(f"{DATA}:info_cmd", "Rows, columns, overlays, size and event count of DATASET."),
    "validate": LazyCommand(
        f"{DATA}:validate_cmd", "Check DATASET: schema, metadata, ids, overlays and the event log."
    ),
    "ls": LazyCommand("usrbatch.cli.ls_cmds:ls_cmd", "List datasets under the root."),
    "events": LazyCommand("usrbatch.cli.events_cmds:events_group", "The dataset event log (.events.log)."),
    "diff": LazyCommand(
        f"{SYNC}:diff_cmd",
        "Compare a local dataset (or one file) with its copy on REMOTE (no locks, no writes).",
    ),
    "status": LazyCommand(f"{SYNC}:status_cmd", "Alias of diff (plain output, no audit file)."),
    "pull": LazyCommand(
        f"{SYNC}:pull_cmd",
        "Make the local dataset (or one file) equal to its copy on REMOTE (staged, verified, then promoted).",
    ),
    "push": LazyCommand(
        f"{SYNC}:push_cmd",
        "Make the copy on REMOTE equal to the local dataset (or one file) (temp names, verified, then renamed).",
    ),
    "remotes": LazyCommand(
        "usrbatch.cli.remotes_cmds:remotes_group",
        "Remotes of remotes.yaml (--remotes-config or USR_REMOTES_PATH).",
    ),
}


@click.group(
    name="usr", cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]}
)
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
    from pathlib import Path  # not at the top: `usr --help`/`--version` never get here

    if remotes_config:
        os.environ["USR_REMOTES_PATH"] = str(Path(remotes_config).expanduser().absolute())
    log_path = log_json or os.environ.get("USRBATCH_AUDIT_LOG")
    ctx.obj = UsrContext(
        root=resolve_root(root),
        remotes_config=Path(remotes_config).expanduser().absolute() if remotes_config else None,
        rich=rich,
        log_json=Path(log_path).expanduser().absolute() if log_path else None,
    )


def main(argv: list[str] | None = None) -> None:
    sys.exit(run_cli(usr, argv))


if __name__ == "__main__":
    main()
