"""What `usr diff|pull|push` print and ask, in the public contract's words (§10): the plain diff,
`WARNING: <note>` lines, the confirmation prompt, a progress bar on a terminal, the printed audit
summary and `Pull complete.`/`Push complete.`."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import click

from usrbatch.cli.sync_options import SyncFlags
from usrbatch.errors import UserAbort
from usrbatch.sync import audit
from usrbatch.sync.plan import DiffSummary
from usrbatch.sync.result import SyncResult
from usrbatch.terminal import printable
from usrbatch.transport.base import ProgressFn

PROMPT = "[Enter = Yes / n = No] : "


def echo_lines(lines: list[str]) -> None:
    for line in lines:
        click.echo(printable(line))  # file names come from the remote: no terminal escapes


def echo_notes(summary: DiffSummary) -> None:
    for note in summary.verify_notes:
        click.echo(f"WARNING: {printable(note)}")


def confirm_overwrite() -> None:
    """The public prompt; `n`/`no` (or end of input) aborts with exit 130."""
    click.echo("Changes detected. Proceed with overwrite?")
    click.echo(PROMPT, nl=False)
    answer = sys.stdin.readline()
    if not answer:
        click.echo("")
        raise UserAbort("no answer on stdin; pass -y to proceed without a prompt")
    if answer.strip().lower() in ("n", "no"):
        raise UserAbort("declined")


def progress_bar() -> Callable[[int], ProgressFn | None] | None:
    """Bytes, rate and ETA on stderr, only when stderr is a terminal (never in batch jobs)."""
    if not sys.stderr.isatty():
        return None

    def factory(total: int) -> ProgressFn:
        state = {"done": 0, "t0": time.monotonic(), "last": 0.0}

        def on_bytes(_path: str, n: int) -> None:
            state["done"] += n
            now = time.monotonic()
            if now - state["last"] < 0.1 and state["done"] < total:
                return
            state["last"] = now
            rate = state["done"] / max(now - state["t0"], 1e-6)
            eta = (total - state["done"]) / rate if rate > 0 else 0.0
            sys.stderr.write(
                f"\r{audit.human_size(state['done'])}/{audit.human_size(total)}"
                f"  {audit.human_size(int(rate))}/s  ETA {eta:4.0f}s "
            )
            if state["done"] >= total:
                sys.stderr.write("\n")
            sys.stderr.flush()

        return on_bytes

    return factory


def plan_hook(yes: bool, dry_run: bool) -> Callable[[DiffSummary], None]:
    def on_plan(summary: DiffSummary) -> None:
        echo_notes(summary)
        echo_lines(audit.diff_lines(summary))
        if not summary.has_change:
            click.echo("Already up to date.")
        elif not yes and not dry_run:
            confirm_overwrite()

    return on_plan


def report(action: str, result: SyncResult, *, sidecars: bool, hashes: bool, flags: SyncFlags) -> None:
    for note in result.notes:
        click.echo(f"NOTE: {note}", err=True)
    payload = audit.audit_payload(
        result.summary, action=action, state=result.transfer_state, sidecars=sidecars, content_hashes=hashes
    )
    echo_lines(audit.audit_lines(payload))
    if flags.audit_json_out:
        audit.write_audit_json(Path(flags.audit_json_out), payload)
    if not flags.dry_run:
        click.echo(f"{action.capitalize()} complete.")
