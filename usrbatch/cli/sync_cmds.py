"""`usr diff|status|pull|push TARGET REMOTE`: parse the flags (typed `SyncFlags`), resolve the
target, call `usrbatch.sync.api.run_opened` (datasets and single files alike), render the result.

TARGET is a file (FILE mode: ends with `.parquet` or is an existing file), a dataset directory, or
a dataset id (usrbatch.sync.targets). The flags are declared and typed in sync_options.py; what
the commands print and ask (the public contract's §10 output) is in sync_output.py. Flag-policy
errors are UsrErrors (`ERROR: ...`, exit 2), not the public SystemExit 1.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import click

from usrbatch.auditlog import bind_context, configure_from_env
from usrbatch.cli.common import UsrContext, pass_usr
from usrbatch.cli.sync_options import (
    SyncFlags,
    common_ignored,
    file_options,
    transfer_options,
    verify_option,
    with_options,
)
from usrbatch.cli.sync_output import echo_lines, echo_notes, plan_hook, progress_bar, report
from usrbatch.dataset.event_revision import EventHistoryError
from usrbatch.remotes import RemoteConfig
from usrbatch.sync import api, audit, filemode
from usrbatch.sync.options import SyncOptions
from usrbatch.sync.targets import is_file_mode, resolve_dataset_target, strict_bootstrap_enabled
from usrbatch.transport.base import Transport

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


# -- commands --------------------------------------------------------------------------------


def _target(ctx: UsrContext, action: str, raw: str, remote: str, flags: SyncFlags) -> api.SyncTarget:
    """FILE mode or dataset mode, resolved (nothing touched yet); binds `dataset` to the log."""
    if is_file_mode(ctx.root, raw):
        if action != "diff":
            api.refuse_dataset_only_flags(flags.dataset_only_given())
        return file_target(ctx, raw, remote, flags.repo_root, flags.remote_path)
    note_file_only_options(raw, flags.repo_root, flags.remote_path)
    strict = action == "pull" and strict_bootstrap_enabled(flags.strict_bootstrap_id)
    root, ds = resolve_dataset_target(ctx.root, raw, action=action, strict=strict)  # type: ignore[arg-type]
    bind_context(dataset=ds)
    return api.DatasetTarget(root, ds, remote_config(ctx, remote))


def _opener(ctx: UsrContext, remote: str, target: api.SyncTarget) -> Callable[[RemoteConfig], Transport]:
    """The transport opener of a target (module-level names looked up at call time)."""
    if isinstance(target, filemode.FileTarget):
        return lambda _config: open_file_remote(target)
    return lambda _config: open_remote(ctx, remote)


def _run_diff(
    ctx: UsrContext, dataset: str, remote: str, fmt: str, audit_out: str | None, flags: SyncFlags
) -> None:
    configure_from_env(ctx.log_json)
    target = _target(ctx, "diff", dataset, remote, flags)
    options = SyncOptions(verify=flags.verify, sidecars=False, content_hashes=False)
    result = api.run_opened("diff", target, _opener(ctx, remote, target), options)
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
    flags = SyncFlags.of({**_ignored, "verify": verify, "repo_root": repo_root, "remote_path": remote_path})
    _run_diff(ctx, dataset, remote, fmt, audit_json_out, flags)


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
    flags = SyncFlags.of({**_ignored, "verify": verify, "repo_root": repo_root, "remote_path": remote_path})
    _run_diff(ctx, dataset, remote, "plain", None, flags)


def _transfer(
    action: Literal["pull", "push"], ctx: UsrContext, raw: str, remote: str, flags: SyncFlags
) -> None:
    """Parse → one api.run → render; FILE mode verifies only the one file (no sidecars)."""
    configure_from_env(ctx.log_json)
    if is_file_mode(ctx.root, raw):
        sidecars = hashes = False
        options = SyncOptions(
            verify=flags.verify, sidecars=False, content_hashes=False, dry_run=flags.dry_run
        )
    else:
        sidecars, hashes = flags.policy()
        options = SyncOptions(
            verify=flags.verify,
            sidecars=sidecars,
            content_hashes=hashes,
            primary_only=flags.primary_only,
            skip_snapshots=flags.skip_snapshots,
            dry_run=flags.dry_run,
            lock_timeout=flags.lock_timeout,
        )
        options.validate()
    target = _target(ctx, action, raw, remote, flags)
    hooks = api.SyncHooks(on_plan=plan_hook(flags.yes, flags.dry_run), progress=progress_bar())
    try:
        result = api.run_opened(action, target, _opener(ctx, remote, target), options, hooks)
    except EventHistoryError as exc:
        if isinstance(target, api.DatasetTarget):
            exc.hint = exc.advice(target.dataset_id, remote)  # which side is ahead, with the commands
        raise
    report(action, result, sidecars=sidecars, hashes=hashes, flags=flags)


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
    _transfer("pull", ctx, dataset, remote, SyncFlags.of(kw))


@click.command("push")
@click.argument("dataset")
@click.argument("remote")
@with_options(transfer_options)
@with_options(file_options)
@pass_usr
def push_cmd(ctx: UsrContext, dataset: str, remote: str, **kw) -> None:
    """Make the copy on REMOTE equal to the local dataset (or one file) (temp names, verified, then renamed)."""
    _transfer("push", ctx, dataset, remote, SyncFlags.of(kw))


def register(group: click.Group) -> None:
    """Add diff, status, pull and push to the `usr` group."""
    for command in (diff_cmd, status_cmd, pull_cmd, push_cmd):
        group.add_command(command)
