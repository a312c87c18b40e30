"""`usr events tail`: a dataset's event log (.events.log) printed one event per line."""

from __future__ import annotations

from collections.abc import Iterable

import click

from usrbatch.cli.common import UsrContext, pass_usr
from usrbatch.dataset.event_read import follow_lines, iter_lines, render_line, tail_lines
from usrbatch.dataset.ref import open_dataset
from usrbatch.errors import EventLogError, UsrError
from usrbatch.terminal import printable


@click.group("events")
def events_group() -> None:
    """The dataset event log (.events.log)."""


@events_group.command("tail")
@click.argument("dataset")
@click.option("--n", "-n", "n", default=0, show_default=True, type=int, help="Last N lines (0 = all).")
@click.option("--format", "fmt", default="json", show_default=True, help="json or raw.")
@click.option("--follow", is_flag=True, help="Keep printing new events (Ctrl-C to stop).")
@pass_usr
def events_tail(usr: UsrContext, dataset: str, n: int, fmt: str, follow: bool) -> None:
    """Print events of DATASET, one per line."""
    if fmt not in ("json", "raw"):
        raise UsrError("format must be one of: json, raw.")
    ref = open_dataset(usr.root, dataset)
    if n < 0:
        raise EventLogError("--n must be >= 0 (0 = all lines).")
    if not (ref.dir / ".events.log").is_file():
        raise EventLogError(f"Events log not found: {ref.dir / '.events.log'}")
    try:
        if n == 0:  # stream twice: check every line, then print (no partial answer, bounded memory)
            for line in iter_lines(ref.dir):
                render_line(line, fmt)
            rendered: Iterable[str] = (render_line(line, fmt) for line in iter_lines(ref.dir))
        else:
            rendered = [render_line(line, fmt) for line in tail_lines(ref.dir, n)]
    except EventLogError as exc:
        raise EventLogError(
            exc.message,
            hint=f"{ref.dir / '.events.log'} has a malformed line; `usr validate {ref.dataset_id}` "
            "names it. `--format raw` prints the lines as stored.",
        ) from exc
    for text in rendered:
        click.echo(printable(text))  # json is ASCII already; raw lines are shown as stored, escaped
    if follow:
        for line in follow_lines(ref.dir):
            click.echo(printable(render_line(line, fmt)))


def register(group: click.Group) -> None:
    """Add this module's commands to the `usr` group."""
    group.add_command(events_group)
