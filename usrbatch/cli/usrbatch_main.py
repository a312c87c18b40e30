"""`usrbatch`: the job-plane CLI."""

from __future__ import annotations

import sys

import click

from usrbatch import __version__
from usrbatch.cli.common import run_cli


@click.group(name="usrbatch", context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="usrbatch")
def usrbatch() -> None:
    """Scheduler-native batch loops over USR datasets."""


def main(argv: list[str] | None = None) -> None:
    sys.exit(run_cli(usrbatch, argv))


if __name__ == "__main__":
    main()
