"""A click group that imports a subcommand's module only when that subcommand runs.

`usr --version` and `usr --help` must not pay for pyarrow, paramiko, structlog or yaml: the command
modules import those at their top. Click's documented LazyGroup pattern ("module:attribute" per
command name) does that; the group's own `--help` lists each command's one-line summary from the
table here, so listing commands imports none of them (tests/cli/test_startup_imports.py checks the
summaries against the real commands' help).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import click


@dataclass(frozen=True)
class LazyCommand:
    """Where a subcommand lives ("package.module:attribute") and its help's first paragraph."""

    target: str
    summary: str


class LazyGroup(click.Group):
    """click.Group whose `lazy` commands are imported on first use (get_command), not at start-up."""

    def __init__(self, *args: object, lazy: dict[str, LazyCommand] | None = None, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lazy: dict[str, LazyCommand] = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            self.add_command(load_command(self.lazy[cmd_name].target), cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The Commands section, as click writes it, without importing the lazy commands."""
        names = [n for n in self.list_commands(ctx) if n in self.lazy and n not in self.commands]
        if not names:
            super().format_commands(ctx, formatter)
            return
        rows: list[tuple[str, str | None]] = []
        for name in self.list_commands(ctx):
            loaded = self.commands.get(name)
            if loaded is not None:
                if not loaded.hidden:
                    rows.append((name, None))
            else:
                rows.append((name, self.lazy[name].summary))
        if not rows:
            return
        limit = formatter.width - 6 - max(len(name) for name, _ in rows)
        lines = []
        for name, summary in rows:
            if summary is None:
                help_text = self.commands[name].get_short_help_str(limit)
            else:
                # a bare placeholder shortens the summary exactly as the real command would
                help_text = click.Command(name, help=summary).get_short_help_str(limit)
            lines.append((name, help_text))
        with formatter.section("Commands"):
            formatter.write_dl(lines)


def load_command(target: str) -> click.Command:
    """Import "package.module:attribute" and return that click command."""
    module_name, _, attr = target.partition(":")
    command = getattr(importlib.import_module(module_name), attr)
    if not isinstance(command, click.Command):
        raise TypeError(f"{target} is not a click command")
    return command
