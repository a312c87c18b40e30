"""`usr diff|status|pull|push DATASET REMOTE`: thin wrappers over usrbatch.sync.engine.

Output follows the public contract (§10): the plain diff, `WARNING: <note>` lines, the
confirmation prompt, the printed audit summary, the audit JSON and `Pull complete.`/`Push
complete.`. Flag-policy errors are UsrErrors (`ERROR: ...`, exit 2), not the public SystemExit 1.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import click

from usrbatch.auditlog import bind_context, configure_from_env
from usrbatch.cli.common import UsrContext, pass_usr
from usrbatch.dataset.layout import RECORDS, REGISTRY_FILE, normalize_dataset_id
from usrbatch.errors import DatasetError, UserAbort
from usrbatch.sync import audit, engine
from usrbatch.sync.options import SyncOptions, resolve_flag_policy
from usrbatch.sync.plan import DiffSummary
from usrbatch.sync.verify import VERIFY_MODES
from usrbatch.transport.base import ProgressFn, Transport

PROMPT = "[Enter = Yes / n = No] : "


# -- target and remote resolution ------------------------------------------------------------


def resolve_target(root: Path, raw: str) -> tuple[Path, str]:
    """(datasets root, dataset id) for a dataset id or a dataset dir path (§10 target rules)."""
    if raw.endswith(".parquet") or Path(raw).is_file():
        raise DatasetError(
            f"'{raw}' is a file: FILE mode is not supported by usr sync here.",
            hint="Pass a dataset id (e.g. densegen/demo) or a dataset directory.",
        )
    candidate = Path(raw).expanduser()
    if candidate.is_dir() and (candidate / RECORDS).is_file():
        path = candidate.resolve()
        try:
            return root, normalize_dataset_id(path.relative_to(Path(root).resolve()).as_posix())
        except ValueError:
            pass
        for ancestor in path.parents:
            if (ancestor / REGISTRY_FILE).is_file():
                return ancestor, normalize_dataset_id(path.relative_to(ancestor).as_posix())
        raise DatasetError(
            "Dataset directory path is outside --root and no registry.yaml ancestor was found. "
            "Pass --root <usr_dataset_root> or use a dataset id."
        )
    return root, normalize_dataset_id(raw)


def open_remote(ctx: UsrContext, name: str) -> Transport:
    from usrbatch.remotes import get_remote
    from usrbatch.transport.factory import open_transport

    return open_transport(get_remote(name, ctx.remotes_config))


# -- rendering -------------------------------------------------------------------------------


def echo_lines(lines: list[str]) -> None:
    for line in lines:
        click.echo(line)


def echo_notes(summary: DiffSummary) -> None:
    for note in summary.verify_notes:
        click.echo(f"WARNING: {note}")


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


# -- commands --------------------------------------------------------------------------------

verify_option = click.option(
    "--verify",
    type=click.Choice(VERIFY_MODES),
    default="hash",
    show_default=True,
    help="How the primary records.parquet is verified: hash (sha256), size, parquet (rows/cols), auto.",
)
common_ignored = [
    click.option("--primary-only", is_flag=True, help="Only records.parquet."),
    click.option("--skip-snapshots", is_flag=True, help="Leave _snapshots/ alone."),
    click.option("--dry-run", is_flag=True, help="Plan and report; change nothing anywhere."),
    click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation."),
]


def with_options(options: list) -> Callable[[Callable], Callable]:
    """Apply a shared list of click options (in their listed order)."""

    def decorate(fn: Callable) -> Callable:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate


def _run_diff(
    ctx: UsrContext, dataset: str, remote: str, verify: str, fmt: str, audit_out: str | None
) -> None:
    configure_from_env(ctx.log_json)
    root, ds = resolve_target(ctx.root, dataset)
    bind_context(dataset=ds)
    transport = open_remote(ctx, remote)
    try:
        result = engine.plan_diff(
            root, ds, transport, SyncOptions(verify=verify, sidecars=False, content_hashes=False)
        )
    finally:
        transport.close()
    payload = audit.audit_payload(
        result.summary, action="diff", state=result.transfer_state, sidecars=False, content_hashes=False
    )
    if audit_out:
        audit.write_audit_json(Path(audit_out), payload)
    if fmt == "json":
        click.echo(audit.diff_json_text(result.summary))
        return
    echo_notes(result.summary)
    for note in result.notes:
        click.echo(f"WARNING: {note}")
    echo_lines(audit.diff_lines(result.summary))


@click.command("diff")
@click.argument("dataset")
@click.argument("remote")
@verify_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["auto", "rich", "plain", "json"]),
    default="auto",
    show_default=True,
    help="Output format (rich and auto print the plain layout).",
)
@click.option(
    "--audit-json-out", type=click.Path(dir_okay=False), default=None, help="Write the audit JSON here."
)
@with_options(common_ignored)
@pass_usr
def diff_cmd(
    ctx: UsrContext, dataset: str, remote: str, verify: str, fmt: str, audit_json_out: str | None, **_ignored
) -> None:
    """Compare a local dataset with its copy on REMOTE (no locks, no writes)."""
    _run_diff(ctx, dataset, remote, verify, fmt, audit_json_out)


@click.command("status")
@click.argument("dataset")
@click.argument("remote")
@verify_option
@with_options(common_ignored)
@pass_usr
def status_cmd(ctx: UsrContext, dataset: str, remote: str, verify: str, **_ignored) -> None:
    """Alias of diff (plain output, no audit file)."""
    _run_diff(ctx, dataset, remote, verify, "plain", None)


def _transfer(action: str, ctx: UsrContext, dataset: str, remote: str, **kw) -> None:
    configure_from_env(ctx.log_json)
    sidecars, hashes = resolve_flag_policy(
        verify_sidecars=kw["verify_sidecars"],
        no_verify_sidecars=kw["no_verify_sidecars"],
        verify_derived_hashes=kw["verify_derived_hashes"],
        no_verify_derived_hashes=kw["no_verify_derived_hashes"],
    )
    opts = SyncOptions(
        verify=kw["verify"],
        sidecars=sidecars,
        content_hashes=hashes,
        primary_only=kw["primary_only"],
        skip_snapshots=kw["skip_snapshots"],
        dry_run=kw["dry_run"],
        lock_timeout=kw["lock_timeout"],
    )
    opts.validate()
    root, ds = resolve_target(ctx.root, dataset)
    bind_context(dataset=ds)

    def on_plan(summary: DiffSummary) -> None:
        echo_notes(summary)
        echo_lines(audit.diff_lines(summary))
        if not summary.has_change:
            click.echo("Already up to date.")
        elif not kw["yes"] and not opts.dry_run:
            confirm_overwrite()

    transport = open_remote(ctx, remote)
    try:
        run = engine.pull if action == "pull" else engine.push
        result = run(root, ds, transport, opts, progress=progress_bar(), on_plan=on_plan)
    finally:
        transport.close()
    for note in result.notes:
        click.echo(f"NOTE: {note}", err=True)
    payload = audit.audit_payload(
        result.summary, action=action, state=result.transfer_state, sidecars=sidecars, content_hashes=hashes
    )
    echo_lines(audit.audit_lines(payload))
    if kw["audit_json_out"]:
        audit.write_audit_json(Path(kw["audit_json_out"]), payload)
    if not opts.dry_run:
        click.echo(f"{action.capitalize()} complete.")


transfer_options = [
    verify_option,
    click.option("--verify-sidecars", is_flag=True, help="Verify sidecars after transfer (default: on)."),
    click.option("--no-verify-sidecars", is_flag=True, help="Skip sidecar and content-hash verification."),
    click.option(
        "--verify-derived-hashes",
        is_flag=True,
        help="Verify _derived/_auxiliary content hashes (default: on).",
    ),
    click.option("--no-verify-derived-hashes", is_flag=True, help="Skip content-hash verification only."),
    *common_ignored,
    click.option(
        "--audit-json-out", type=click.Path(dir_okay=False), default=None, help="Write the audit JSON here."
    ),
    click.option(
        "--lock-timeout",
        type=click.FloatRange(min=0),
        default=300.0,
        show_default=True,
        help="Seconds to wait for the local dataset lock and the remote lease.",
    ),
]


@click.command("pull")
@click.argument("dataset")
@click.argument("remote")
@with_options(transfer_options)
@pass_usr
def pull_cmd(ctx: UsrContext, dataset: str, remote: str, **kw) -> None:
    """Make the local dataset equal to its copy on REMOTE (staged, verified, then promoted)."""
    _transfer("pull", ctx, dataset, remote, **kw)


@click.command("push")
@click.argument("dataset")
@click.argument("remote")
@with_options(transfer_options)
@pass_usr
def push_cmd(ctx: UsrContext, dataset: str, remote: str, **kw) -> None:
    """Make the copy on REMOTE equal to the local dataset (temp names, verified, then renamed)."""
    _transfer("push", ctx, dataset, remote, **kw)


def register(group: click.Group) -> None:
    """Add diff, status, pull and push to the `usr` group."""
    for command in (diff_cmd, status_cmd, pull_cmd, push_cmd):
        group.add_command(command)
