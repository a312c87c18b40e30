"""`usr namespace register|list|show`: the namespaces of registry.yaml (the columns overlays may
write)."""

from __future__ import annotations

import click

from usrbatch.cli.common import UsrContext, pass_usr, say
from usrbatch.dataset.registry import load_registry, register_namespace


@click.group("namespace")
def namespace_group() -> None:
    """Namespaces in registry.yaml (the columns overlays may write)."""


@namespace_group.command("register")
@click.argument("namespace")
@click.option(
    "--columns", required=True, help="'ns__a:float64,ns__v:list<float64>' (struct<a:T,b:U> is fine)."
)
@click.option("--owner", default=None, help="Who owns the namespace.")
@click.option("--description", default=None, help="What the columns hold.")
@click.option("--overwrite", is_flag=True, help="Replace an existing namespace.")
@pass_usr
def namespace_register(
    usr: UsrContext, namespace: str, columns: str, owner: str | None, description: str | None, overwrite: bool
) -> None:
    """Register NAMESPACE with its typed columns."""
    path = register_namespace(
        usr.root, namespace, columns, owner=owner, description=description, overwrite=overwrite
    )
    say(f"Registered namespace '{namespace}' in {path}.")


@namespace_group.command("list")
@pass_usr
def namespace_list(usr: UsrContext) -> None:
    """List registered namespaces and their columns."""
    registry = load_registry(usr.root, required=True)
    assert registry is not None
    for name, spec in sorted(registry.namespaces.items()):
        say(f"{name}: {', '.join(c.name for c in spec.columns)}")


@namespace_group.command("show")
@click.argument("namespace")
@pass_usr
def namespace_show(usr: UsrContext, namespace: str) -> None:
    """Show one namespace."""
    registry = load_registry(usr.root, required=True)
    assert registry is not None
    spec = registry.require(namespace)
    say(f"name: {spec.name}")
    say(f"owner: {spec.owner or ''}")
    say(f"description: {spec.description or ''}")
    click.echo("columns:")
    for column in spec.columns:
        say(f"  - {column.name}: {column.type}")


def register(group: click.Group) -> None:
    """Add this module's commands to the `usr` group."""
    group.add_command(namespace_group)
