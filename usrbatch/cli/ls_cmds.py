"""`usr ls`: the datasets under the root. Its own module because it reads directory names only:
loading it must not import the parquet stack that every other data command needs."""

from __future__ import annotations

import json

import click

from usrbatch.cli.common import UsrContext, pass_usr
from usrbatch.dataset.layout import list_datasets


@click.command("ls")
@click.option("--format", "fmt", type=click.Choice(["plain", "json"]), default="plain", show_default=True)
@pass_usr
def ls_cmd(usr: UsrContext, fmt: str) -> None:
    """List datasets under the root."""
    ids = list_datasets(usr.root)
    if fmt == "json":
        click.echo(json.dumps({"root": str(usr.root), "datasets": ids}))
        return
    for dataset_id in ids:
        click.echo(dataset_id)


def register(group: click.Group) -> None:
    """Add this module's command to the `usr` group."""
    group.add_command(ls_cmd)
