"""`usr remotes list|show|add|wizard|doctor|warm-auth|status|close`: manage remotes.yaml, check a
remote, and hold one SSH login per work session."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from usrbatch.cli.common import UsrContext, pass_usr
from usrbatch.errors import UsrError
from usrbatch.remotes import (
    RemoteConfig,
    create_remotes_file,
    get_remote,
    load_remotes,
    remotes_path,
    save_remote,
)

PRESETS = {"bu-scc": {"host": "scc1.bu.edu", "transfer_host": "scc-globus.bu.edu"}}


def _config_path(ctx: UsrContext) -> Path:
    return remotes_path(ctx.remotes_config)


def list_line(remote: RemoteConfig) -> str:
    """One `remotes list` line (contract §11)."""
    if remote.type == "local":
        return f"{remote.name:<20} local  base_dir={remote.base_dir}"
    auth = "batch" if remote.batch_mode else "interactive-auth"
    return f"{remote.name:<20} ssh {remote.user}@{remote.host}  base_dir={remote.base_dir}  auth={auth}"


def _repo_root_lines(remote: RemoteConfig) -> list[str]:
    """FILE-mode roots, shown only when set."""
    return [
        f"{label}: {value}"
        for label, value in (("repo_root", remote.repo_root), ("local_repo_root", remote.local_repo_root))
        if value
    ]


def show_lines(remote: RemoteConfig) -> list[str]:
    """The `remotes show` block (contract §11, plus `port` for ssh and the FILE-mode roots)."""
    if remote.type == "local":
        lines = [f"name     : {remote.name}", "type     : local", f"base_dir : {remote.base_dir}"]
        return lines + _repo_root_lines(remote)
    return [
        f"name     : {remote.name}",
        "type     : ssh",
        f"ssh      : {remote.user}@{remote.host}",
        f"port     : {remote.port}",
        f"base_dir : {remote.base_dir}",
        f"batch    : {'yes' if remote.batch_mode else 'no'}",
        f"ssh_key  : {remote.ssh_key_env or '(ssh-agent or default key)'}",
        *_repo_root_lines(remote),
    ]


def with_repo_roots(fn: Callable) -> Callable:
    """--repo-root / --local-repo-root: where FILE mode maps single files (usr-contract §6)."""
    fn = click.option(
        "--local-repo-root",
        default=None,
        help="FILE mode: the local repo root single-file paths are taken relative to.",
    )(fn)
    return click.option("--repo-root", default=None, help="FILE mode: the same repo's root on the remote.")(
        fn
    )


def ssh_config_snippet(name: str, host: str, user: str) -> str:
    """The ~/.ssh/config block the wizard prints. remotes.yaml names `Host <name>`, so what you add
    here (Port, IdentityFile, ProxyJump) applies to usr as it does to ssh."""
    return "\n".join(
        [
            "# Add to ~/.ssh/config (remotes.yaml names this Host), then run `ssh " + name + "` once to "
            "check and trust the host key.",
            f"Host {name}",
            f"    HostName {host}",
            f"    User {user}",
            "    # Uncomment and point at your key; IdentitiesOnly limits ssh to the keys named here.",
            "    # IdentityFile ~/.ssh/id_ed25519",
            "    IdentitiesOnly yes",
            "    AddKeysToAgent yes",
            "    ServerAliveInterval 60",
            "    ServerAliveCountMax 2",
        ]
    )


@click.group(name="remotes")
def remotes_group() -> None:
    """Remotes of remotes.yaml (--remotes-config or USR_REMOTES_PATH)."""


@remotes_group.command(name="list")
@pass_usr
def list_cmd(ctx: UsrContext) -> None:
    """List configured remotes."""
    remotes = load_remotes(_config_path(ctx))
    if not remotes:
        click.echo("(no remotes configured)")
        return
    for remote in remotes.values():
        click.echo(list_line(remote))


@remotes_group.command(name="show")
@click.argument("name")
@pass_usr
def show_cmd(ctx: UsrContext, name: str) -> None:
    """Show one remote."""
    for line in show_lines(get_remote(name, _config_path(ctx))):
        click.echo(line)


@remotes_group.command(name="add")
@click.argument("name")
@click.option("--type", "kind", type=click.Choice(["ssh", "local"]), default="ssh", show_default=True)
@click.option("--host", default=None, help="Host name or ~/.ssh/config alias (ssh).")
@click.option("--user", default=None, help="Remote user name (ssh).")
@click.option("--port", type=click.IntRange(1, 65535), default=22, show_default=True)
@click.option("--base-dir", required=True, help="Datasets root on the remote (or local directory).")
@click.option("--batch-mode/--no-batch-mode", default=True, help="--no-batch-mode allows interactive auth.")
@click.option("--ssh-key-env", default=None, help="Name of an env var holding the SSH key path.")
@with_repo_roots
@pass_usr
def add_cmd(
    ctx: UsrContext,
    name: str,
    kind: str,
    host: str | None,
    user: str | None,
    port: int,
    base_dir: str,
    batch_mode: bool,
    ssh_key_env: str | None,
    repo_root: str | None,
    local_repo_root: str | None,
) -> None:
    """Add or replace a remote in remotes.yaml."""
    if kind == "ssh":
        for flag, value in (("--host", host), ("--user", user)):
            if not value:
                raise UsrError(
                    f"{flag} is required for --type ssh.",
                    hint=f"usr remotes add {name} --type ssh --host HOST --user USER --base-dir DIR",
                )
        remote = RemoteConfig(
            name=name,
            type="ssh",
            host=host,
            user=user,
            port=port,
            base_dir=base_dir,
            batch_mode=batch_mode,
            ssh_key_env=ssh_key_env,
            repo_root=repo_root,
            local_repo_root=local_repo_root,
        )
    else:
        remote = RemoteConfig(
            name=name, type="local", base_dir=base_dir, repo_root=repo_root, local_repo_root=local_repo_root
        )
    path = save_remote(remote, _config_path(ctx))
    click.echo(f"Saved remote '{name}' to {path}")


@remotes_group.command(name="wizard")
@click.option("--preset", required=True, help="Site preset (bu-scc).")
@click.option("--name", default=None, help="Remote name (default: the preset name).")
@click.option("--user", required=True, help="Your cluster user name.")
@click.option("--base-dir", required=True, help="Datasets root on the cluster.")
@click.option("--host", default=None, help="Override the preset's login host.")
@click.option("--transfer-node", is_flag=True, help="Use the data-transfer node (scc-globus.bu.edu).")
@click.option("--batch-mode/--no-batch-mode", default=True)
@click.option("--ssh-key-env", default=None)
@with_repo_roots
@pass_usr
def wizard_cmd(
    ctx: UsrContext,
    preset: str,
    name: str | None,
    user: str,
    base_dir: str,
    host: str | None,
    transfer_node: bool,
    batch_mode: bool,
    ssh_key_env: str | None,
    repo_root: str | None,
    local_repo_root: str | None,
) -> None:
    """Save a remote from a site preset and print the matching ~/.ssh/config block.

    remotes.yaml gets the ssh Host alias (the remote's name) as its host, and the printed block maps
    that alias to the login node, so your Port/IdentityFile/ProxyJump lines apply to usr too.
    A missing remotes file is created (mode 0600, a new parent directory 0700).
    """
    if preset not in PRESETS:
        raise UsrError(f"Unsupported preset '{preset}'. Supported presets: {', '.join(PRESETS)}.")
    spec = PRESETS[preset]
    chosen = host or (spec["transfer_host"] if transfer_node else spec["host"])
    remote_name = name or preset
    remote = RemoteConfig(
        name=remote_name,
        type="ssh",
        host=remote_name,
        user=user,
        base_dir=base_dir,
        batch_mode=batch_mode,
        ssh_key_env=ssh_key_env,
        repo_root=repo_root,
        local_repo_root=local_repo_root,
    )
    created = create_remotes_file(_config_path(ctx))
    if created is not None:
        click.echo(f"Created {created} (mode 0600)")
    path = save_remote(remote, _config_path(ctx))
    click.echo(f"Saved remote '{remote_name}' to {path}")
    click.echo("")
    click.echo(ssh_config_snippet(remote_name, chosen, user))


@remotes_group.command(name="doctor")
@click.option("--remote", "name", required=True, help="Remote to check.")
@click.option("--check-base-dir/--no-check-base-dir", default=True, show_default=True)
@click.option(
    "--ssh-config",
    type=click.Path(dir_okay=False),
    default=None,
    help="ssh_config file to use (default: $USRBATCH_SSH_CONFIG, else ~/.ssh/config).",
)
@pass_usr
def doctor_cmd(ctx: UsrContext, name: str, check_base_dir: bool, ssh_config: str | None) -> None:
    """Check a remote in order; stop at the first failure with one actionable message."""
    from usrbatch.remotes_doctor import run_doctor

    path = _config_path(ctx)
    remote = get_remote(name, path, check_permissions=False)  # reported as the permissions check
    click.echo(f"Remote: {remote.name} ({remote.label})")
    run_doctor(
        remote,
        remotes_file=path,
        check_base_dir=check_base_dir,
        ssh_config_path=Path(ssh_config).expanduser() if ssh_config else None,
        emit=lambda check: click.echo(check.render()),
    )
    click.echo("Doctor checks passed.")


_SSH_CONFIG_OPTION = click.option(
    "--ssh-config",
    type=click.Path(dir_okay=False),
    default=None,
    help="ssh_config file to pass to ssh -F (default: $USRBATCH_SSH_CONFIG, else ssh's own).",
)


def _ssh_config(value: str | None) -> Path | None:
    return Path(value).expanduser() if value else None


def _session_lines(status) -> list[str]:
    """The aligned plain-text block of `remotes status` / `warm-auth` for one remote."""
    if status.socket_live:
        age = f", logged in {status.age_s:.0f} s ago" if status.age_s is not None else ""
        master = f"live (pid {status.pid}{age})"
    else:
        master = "present-not-live" if status.socket_exists else ("absent" if status.control_path else "n/a")
    lines = [
        f"Remote        : {status.remote}",
        f"SSH target    : {status.ssh_target}",
        f"Transport     : {status.transport}",
        f"Control socket: {master}",
    ]
    if status.control_path:
        lines.append(f"Control path  : {status.control_path}")
    if status.control_persist_s is not None:
        lines.append(f"Persist       : {status.control_persist_s} s after the last session ends")
    if status.bootstrap_state:
        lines.append(f"Bootstrap     : {status.bootstrap_state}")
    lines.append(f"Recommendation: {status.recommendation}")
    return lines


@remotes_group.command(name="warm-auth")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@_SSH_CONFIG_OPTION
@pass_usr
def warm_auth_cmd(ctx: UsrContext, name: str, as_json: bool, ssh_config: str | None) -> None:
    """Log in once (2FA prompts here, on the terminal) and keep the login for later commands.

    Opens the remote's OpenSSH ControlMaster, which lives `control_persist` (default 30m) after its
    last session; usr commands and jobs on this machine reuse it without prompting.
    """
    import json

    from usrbatch.transport.openssh_session import warm_auth

    status = warm_auth(get_remote(name, _config_path(ctx)), ssh_config_path=_ssh_config(ssh_config))
    if as_json:
        click.echo(json.dumps(status.to_json(), separators=(",", ":")))
        return
    for line in _session_lines(status):
        click.echo(line)


@remotes_group.command(name="status")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@_SSH_CONFIG_OPTION
@pass_usr
def status_cmd(ctx: UsrContext, name: str | None, as_json: bool, ssh_config: str | None) -> None:
    """Whether each ssh remote's login (ControlMaster) is alive, and since when."""
    import json

    from usrbatch.transport.openssh_session import session_status

    path = _config_path(ctx)
    remotes = (
        [get_remote(name, path)] if name else [r for r in load_remotes(path).values() if r.type == "ssh"]
    )
    found = [session_status(r, ssh_config_path=_ssh_config(ssh_config)) for r in remotes]
    if as_json:
        data = found[0].to_json() if name else {"remotes": [s.to_json() for s in found]}
        click.echo(json.dumps(data, separators=(",", ":")))
        return
    if not found:
        click.echo("(no ssh remotes configured)")
    for i, status in enumerate(found):
        if i:
            click.echo("")
        for line in _session_lines(status):
            click.echo(line)


@remotes_group.command(name="close")
@click.argument("name")
@_SSH_CONFIG_OPTION
@pass_usr
def close_cmd(ctx: UsrContext, name: str, ssh_config: str | None) -> None:
    """End the remote's login (ssh -O exit); the next command logs in again."""
    from usrbatch.transport.openssh_session import close_session

    if close_session(get_remote(name, _config_path(ctx)), ssh_config_path=_ssh_config(ssh_config)):
        click.echo(f"Closed the SSH login for remote '{name}'.")
    else:
        click.echo(f"No live SSH login for remote '{name}'.")


def register(group: click.Group) -> None:
    """Add `remotes` to the `usr` group."""
    group.add_command(remotes_group)
