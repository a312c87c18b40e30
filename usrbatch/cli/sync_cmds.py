"""`usr diff|status|pull|push TARGET REMOTE`: parse the flags (typed `SyncFlags`), resolve the
target, call `usrbatch.sync.api.run_opened` (datasets and single files alike), render the result.

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
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

import click

from usrbatch.auditlog import bind_context, configure_from_env
from usrbatch.cli.common import UsrContext, pass_usr
from usrbatch.dataset.event_revision import EventHistoryError
from usrbatch.errors import UserAbort
from usrbatch.remotes import RemoteConfig
from usrbatch.sync import api, audit, filemode
from usrbatch.sync.options import SyncOptions, resolve_flag_policy
from usrbatch.sync.plan import DiffSummary
from usrbatch.sync.result import SyncResult
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


@dataclass(frozen=True)
class SyncFlags:
    """The sync commands' flags, typed (click hands them over as keyword arguments)."""

    verify: str = "hash"
    dry_run: bool = False
    yes: bool = False
    primary_only: bool = False
    skip_snapshots: bool = False
    verify_sidecars: bool = False
    no_verify_sidecars: bool = False
    verify_derived_hashes: bool = False
    no_verify_derived_hashes: bool = False
    lock_timeout: float = 300.0
    audit_json_out: str | None = None
    repo_root: str | None = None
    remote_path: str | None = None
    strict_bootstrap_id: bool = False

    @classmethod
    def of(cls, values: dict[str, Any]) -> SyncFlags:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    def dataset_only_given(self) -> list[str]:
        return [flag for key, flag in DATASET_ONLY_FLAGS if getattr(self, key)]

    def policy(self) -> tuple[bool, bool]:
        """(sidecars, content_hashes) per §3.5; conflicting flags raise VerificationError."""
        return resolve_flag_policy(
            verify_sidecars=self.verify_sidecars,
            no_verify_sidecars=self.no_verify_sidecars,
            verify_derived_hashes=self.verify_derived_hashes,
            no_verify_derived_hashes=self.no_verify_derived_hashes,
        )


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


def _plan_hook(yes: bool, dry_run: bool) -> Callable[[DiffSummary], None]:
    def on_plan(summary: DiffSummary) -> None:
        echo_notes(summary)
        echo_lines(audit.diff_lines(summary))
        if not summary.has_change:
            click.echo("Already up to date.")
        elif not yes and not dry_run:
            confirm_overwrite()

    return on_plan


def _report(action: str, result: SyncResult, *, sidecars: bool, hashes: bool, flags: SyncFlags) -> None:
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
    hooks = api.SyncHooks(on_plan=_plan_hook(flags.yes, flags.dry_run), progress=progress_bar())
    try:
        result = api.run_opened(action, target, _opener(ctx, remote, target), options, hooks)
    except EventHistoryError as exc:
        if isinstance(target, api.DatasetTarget):
            exc.hint = exc.advice(target.dataset_id, remote)  # which side is ahead, with the commands
        raise
    _report(action, result, sidecars=sidecars, hashes=hashes, flags=flags)


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
