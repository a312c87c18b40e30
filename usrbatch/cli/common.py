"""What every CLI command shares: the context object and the one place errors are rendered."""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

import click

from usrbatch.errors import UserAbort, UsrError
from usrbatch.terminal import printable

if TYPE_CHECKING:
    from pathlib import Path


@dataclass(frozen=True)
class UsrContext:
    """Global options of `usr`, resolved once."""

    root: Path
    remotes_config: Path | None
    rich: bool
    log_json: Path | None


def resolve_root(root: str | None) -> Path:
    """--root, else $USR_ROOT, else the current directory."""
    from pathlib import Path  # imported by the first command that runs, not by --help/--version

    value = root or os.environ.get("USR_ROOT") or os.getcwd()
    return Path(value).expanduser().absolute()


pass_usr = click.make_pass_decorator(UsrContext)


def say(text: str) -> None:
    """Echo one line that quotes input (paths, column names, ids): control characters escaped."""
    click.echo(printable(text))


def run_cli(group: click.Group, argv: list[str] | None = None) -> int:
    """Run a click group; map UsrError to `ERROR: ...` + exit 2, never a traceback for a user mistake."""
    try:
        # standalone_mode=False: click hands a command's exit code back instead of exiting
        rv = group.main(args=argv, prog_name=group.name, standalone_mode=False)
        return rv if isinstance(rv, int) else 0
    except UsrError as exc:
        # messages echo input (cells, names, paths): escape control bytes, keep ERROR one line
        click.echo(f"ERROR: {printable(exc.message)}")
        if exc.hint:
            click.echo(f"Hint: {printable(exc.hint)}")
        return exc.exit_code
    except UserAbort:
        click.echo("Aborted.", err=True)
        return 130
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except FileExistsError as exc:
        click.echo(f"ERROR: {exc}")
        return 3
    except FileNotFoundError as exc:
        click.echo(f"ERROR: {exc}")
        return 4
    except PermissionError as exc:  # an unreadable file on either side (a local remote included): name it
        where = f": {exc.filename}" if exc.filename else ""
        click.echo(f"ERROR: {exc.strerror or 'Permission denied'}{where}")
        click.echo("Hint: Check that file's permissions (ls -l) and that you can read and write the dataset.")
        return 2
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        return 130
    except BrokenPipeError:
        # `usr head ... | head -1`: the reader went away; that is not an error.
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the interpreter's flush at exit
        return 0
