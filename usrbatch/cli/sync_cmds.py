"""`usr diff|status|pull|push TARGET REMOTE`: thin wrappers over usrbatch.sync.engine (datasets)
and usrbatch.sync.filemode (one file).

TARGET is a file (FILE mode: ends with `.parquet` or is an existing file), a dataset directory, or
a dataset id (usrbatch.sync.targets). Output follows the public contract (§10): the plain diff,
`WARNING: <note>` lines, the confirmation prompt, the printed audit summary, the audit JSON and
`Pull complete.`/`Push complete.`. Flag-policy errors are UsrErrors (`ERROR: ...`, exit 2), not
the public SystemExit 1.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import click

from usrbatch.auditlog import bind_context, configure_from_env
from usrbatch.cli.common import UsrContext, pass_usr
from usrbatch.dataset.event_revision import EventHistoryError
from usrbatch.errors import UserAbort, VerificationError
from usrbatch.remotes import RemoteConfig
from usrbatch.sync import audit, engine, filemode
from usrbatch.sync.options import SyncOptions, resolve_flag_policy
from usrbatch.sync.plan import DiffSummary
from usrbatch.sync.targets import is_file_mode, resolve_dataset_target, strict_bootstrap_enabled
from usrbatch.sync.verify import VERIFY_MODES
from usrbatch.terminal import printable
from usrbatch.transport.base import ProgressFn, Transport

PROMPT = "[Enter = Yes / n = No] : "
DATASET_ONLY_FLAGS = (
    ("primary_only", "--primary-only"),
    ("skip_snapshots", "--skip-snapshots"),
    ("verify_sidecars", "--verify-sidecars"),
    ("no_verify_sidecars", "--no-verify-sidecars"),
    ("verify_derived_hashes", "--verify-derived-hashes"),
    ("no_verify_derived_hashes", "--no-verify-derived-hashes"),
)


# -- target and remote resolution ------------------------------------------------------------


def remote_config(ctx: UsrContext, name: str) -> RemoteConfig:
    from usrbatch.remotes import get_remote

    return get_remote(name, ctx.remotes_config)


def open_remote(ctx: UsrContext, name: str) -> Transport:
    """The transport of a named remote, rooted at its base_dir (dataset mode)."""
    from usrbatch.transport.factory import open_transport

    return open_transport(remote_config(ctx, name))


def open_file_remote(target: filemode.FileTarget) -> Transport:
    """The transport of a FILE-mode target, rooted at the remote file's parent directory."""
    from usrbatch.transport.factory import open_transport

    return open_transport(target.remote)


def file_target(
    ctx: UsrContext, raw: str, remote: str, repo_root: str | None, remote_path: str | None
) -> filemode.FileTarget:
    target = filemode.resolve_file_target(
        raw, remote_config(ctx, remote), remote_path=remote_path, repo_root=repo_root
    )
    bind_context(dataset=str(target.local))
    return target


def note_file_only_options(raw: str, repo_root: str | None, remote_path: str | None) -> None:
    """--repo-root/--remote-path mean nothing for a dataset (the public tool ignores them too)."""
    given = [name for name, value in (("--repo-root", repo_root), ("--remote-path", remote_path)) if value]
    if given:
        verb = "applies" if len(given) == 1 else "apply"
        click.echo(
            f"NOTE: {'/'.join(given)} {verb} to FILE mode only; ignored for dataset '{raw}'.", err=True
        )


def reject_dataset_only_flags(kw: dict) -> None:
    """FILE mode takes none of the dataset-only flags (§3.5)."""
    given = [flag for key, flag in DATASET_ONLY_FLAGS if kw.get(key)]
    if given:
        verb = "is a dataset-only flag" if len(given) == 1 else "are dataset-only flags"
        raise VerificationError(
            f"{'/'.join(given)} {verb} (not valid in FILE mode).",
            hint="FILE mode verifies the one file with --verify hash|size|parquet|auto; drop the flag.",
        )


# -- rendering -------------------------------------------------------------------------------


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


# -- commands --------------------------------------------------------------------------------

verify_option = click.option(
    "--verify",
    type=click.Choice(VERIFY_MODES),
    default="hash",
    show_default=True,
    help="How records.parquet (or the one file in FILE mode) is verified: hash (sha256), size, "
    "parquet (rows/cols), auto.",
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


def _diff_result(
    ctx: UsrContext, dataset: str, remote: str, verify: str, repo_root: str | None, remote_path: str | None
) -> engine.SyncResult:
    if is_file_mode(ctx.root, dataset):
        target = file_target(ctx, dataset, remote, repo_root, remote_path)
        transport = open_file_remote(target)
        try:
            return filemode.diff_file(target, transport, verify=verify)
        finally:
            transport.close()
    note_file_only_options(dataset, repo_root, remote_path)
    root, ds = resolve_dataset_target(ctx.root, dataset, action="diff")
    bind_context(dataset=ds)
    transport = open_remote(ctx, remote)
    try:
        return engine.plan_diff(
            root, ds, transport, SyncOptions(verify=verify, sidecars=False, content_hashes=False)
        )
    finally:
        transport.close()


def _run_diff(
    ctx: UsrContext,
    dataset: str,
    remote: str,
    verify: str,
    fmt: str,
    audit_out: str | None,
    repo_root: str | None = None,
    remote_path: str | None = None,
) -> None:
    configure_from_env(ctx.log_json)
    result = _diff_result(ctx, dataset, remote, verify, repo_root, remote_path)
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


file_options = [
    click.option(
        "--repo-root",
        type=click.Path(file_okay=False),
        default=None,
        help="FILE mode: local repo root the file's remote path is computed from "
        "(default: remote local_repo_root, then $DNADESIGN_REPO_ROOT).",
    ),
    click.option(
        "--remote-path",
        metavar="PATH",
        default=None,
        help="FILE mode: the remote file's path (absolute, or relative to remote repo_root).",
    ),
]


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
@with_options(file_options)
@pass_usr
def diff_cmd(
    ctx: UsrContext,
    dataset: str,
    remote: str,
    verify: str,
    fmt: str,
    audit_json_out: str | None,
    repo_root: str | None,
    remote_path: str | None,
    **_ignored,
) -> None:
    """Compare a local dataset (or one file) with its copy on REMOTE (no locks, no writes)."""
    _run_diff(ctx, dataset, remote, verify, fmt, audit_json_out, repo_root, remote_path)


@click.command("status")
@click.argument("dataset")
@click.argument("remote")
@verify_option
@with_options(common_ignored)
@with_options(file_options)
@pass_usr
def status_cmd(
    ctx: UsrContext,
    dataset: str,
    remote: str,
    verify: str,
    repo_root: str | None,
    remote_path: str | None,
    **_ignored,
) -> None:
    """Alias of diff (plain output, no audit file)."""
    _run_diff(ctx, dataset, remote, verify, "plain", None, repo_root, remote_path)


def _plan_hook(yes: bool, dry_run: bool) -> Callable[[DiffSummary], None]:
    def on_plan(summary: DiffSummary) -> None:
        echo_notes(summary)
        echo_lines(audit.diff_lines(summary))
        if not summary.has_change:
            click.echo("Already up to date.")
        elif not yes and not dry_run:
            confirm_overwrite()

    return on_plan


def _report(action: str, result: engine.SyncResult, *, sidecars: bool, hashes: bool, kw: dict) -> None:
    for note in result.notes:
        click.echo(f"NOTE: {note}", err=True)
    payload = audit.audit_payload(
        result.summary, action=action, state=result.transfer_state, sidecars=sidecars, content_hashes=hashes
    )
    echo_lines(audit.audit_lines(payload))
    if kw["audit_json_out"]:
        audit.write_audit_json(Path(kw["audit_json_out"]), payload)
    if not kw["dry_run"]:
        click.echo(f"{action.capitalize()} complete.")


def _transfer_file(action: str, ctx: UsrContext, raw: str, remote: str, kw: dict) -> None:
    reject_dataset_only_flags(kw)
    target = file_target(ctx, raw, remote, kw["repo_root"], kw["remote_path"])
    transport = open_file_remote(target)
    try:
        run = filemode.pull_file if action == "pull" else filemode.push_file
        result = run(
            target,
            transport,
            verify=kw["verify"],
            dry_run=kw["dry_run"],
            progress=progress_bar(),
            on_plan=_plan_hook(kw["yes"], kw["dry_run"]),
        )
    finally:
        transport.close()
    _report(action, result, sidecars=False, hashes=False, kw=kw)


def _transfer(action: str, ctx: UsrContext, dataset: str, remote: str, **kw) -> None:
    configure_from_env(ctx.log_json)
    if is_file_mode(ctx.root, dataset):
        _transfer_file(action, ctx, dataset, remote, kw)
        return
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
    note_file_only_options(dataset, kw["repo_root"], kw["remote_path"])
    strict = action == "pull" and strict_bootstrap_enabled(kw.get("strict_bootstrap_id", False))
    root, ds = resolve_dataset_target(ctx.root, dataset, action=action, strict=strict)  # type: ignore[arg-type]
    bind_context(dataset=ds)
    transport = open_remote(ctx, remote)
    try:
        run = engine.pull if action == "pull" else engine.push
        result = run(
            root, ds, transport, opts, progress=progress_bar(), on_plan=_plan_hook(kw["yes"], opts.dry_run)
        )
    except EventHistoryError as exc:
        exc.hint = exc.advice(ds, remote)  # which side is ahead, with the commands to run
        raise
    finally:
        transport.close()
    _report(action, result, sidecars=sidecars, hashes=hashes, kw=kw)


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
@with_options(file_options)
@click.option(
    "--strict-bootstrap-id",
    is_flag=True,
    help="Use the dataset id exactly as given (no local name guessing); "
    "also on with USR_SYNC_STRICT_BOOTSTRAP_ID=1.",
)
@pass_usr
def pull_cmd(ctx: UsrContext, dataset: str, remote: str, **kw) -> None:
    """Make the local dataset (or one file) equal to its copy on REMOTE (staged, verified, then promoted)."""
    _transfer("pull", ctx, dataset, remote, **kw)


@click.command("push")
@click.argument("dataset")
@click.argument("remote")
@with_options(transfer_options)
@with_options(file_options)
@pass_usr
def push_cmd(ctx: UsrContext, dataset: str, remote: str, **kw) -> None:
    """Make the copy on REMOTE equal to the local dataset (or one file) (temp names, verified, then renamed)."""
    _transfer("push", ctx, dataset, remote, **kw)


def register(group: click.Group) -> None:
    """Add diff, status, pull and push to the `usr` group."""
    for command in (diff_cmd, status_cmd, pull_cmd, push_cmd):
        group.add_command(command)
