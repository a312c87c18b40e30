"""`usrbatch watch` and `usrbatch metrics`: thin over usrbatch.monitor (docs/monitoring.md)."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import click

from usrbatch import auditlog
from usrbatch.errors import UsrError
from usrbatch.monitor.config import WatchConfig, WatchSettings, load_config

DEFAULT_CONFIG = "~/.config/usrbatch/watch.yaml"


def _dir_option(name: str, help_text: str):  # noqa: ANN202 - a click decorator
    return click.option(name, type=click.Path(file_okay=False, path_type=Path), default=None, help=help_text)


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path("~/.local/state").expanduser())
    return Path(base) / "usrbatch" / "watch"


def _config(path: Path | None) -> WatchConfig:
    explicit = path or (
        Path(os.environ["USRBATCH_WATCH_CONFIG"]) if os.environ.get("USRBATCH_WATCH_CONFIG") else None
    )
    if explicit is not None:
        return load_config(explicit)
    default = Path(DEFAULT_CONFIG).expanduser()
    if default.is_file():
        return load_config(default)
    return WatchConfig(path=None, targets=(), settings=WatchSettings())


def _loop_dirs(loops: tuple[str, ...], all_loops: bool, root: Path | None, loops_dir: Path | None):  # noqa: ANN202
    from usrbatch.jobs.control import resolve_loop
    from usrbatch.monitor.loop_views import all_loop_dirs, loop_bases

    if loops and all_loops:
        raise UsrError("give LOOP names or --all, not both")
    if all_loops:
        bases = loop_bases(root, loops_dir)
        return lambda: all_loop_dirs(bases)
    if not loops:
        raise UsrError("no loop to watch", hint="Name loops (ids or dirs), or pass --all.")
    dirs = [resolve_loop(loop, root=root, loops_dir=loops_dir) for loop in loops]
    return lambda: dirs


@click.command()
@click.argument("loops", nargs=-1)
@click.option("--all", "all_loops", is_flag=True, help="Every loop under --root/--loops-dir (new ones too).")
@click.option("--follow/--once", default=False, show_default=True, help="Poll until stopped, or once (cron).")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=f"Watch config (YAML, mode 0600). Default: $USRBATCH_WATCH_CONFIG, else {DEFAULT_CONFIG}.",
)
@_dir_option(
    "--state-dir", "Cursor, ledger and spool (default: watch.state_dir, else ~/.local/state/usrbatch/watch)."
)
@click.option("--dataset-events", is_flag=True, help="Also follow each loop's dataset .events.log.")
@click.option("--test", "send_test", is_flag=True, help="Send one test message to each target and exit.")
@_dir_option("--root", "Datasets root whose .usrbatch/loops holds the loops (default: $USR_ROOT, else cwd).")
@_dir_option("--loops-dir", "Where loop dirs live.")
def watch(
    loops: tuple[str, ...],
    all_loops: bool,
    follow: bool,
    config_path: Path | None,
    state_dir: Path | None,
    dataset_events: bool,
    send_test: bool,
    root: Path | None,
    loops_dir: Path | None,
) -> int:
    """Follow loops' audit logs and the scheduler; alert the configured targets.

    \b
    Events: job.failed job.refused job.error_held job.pending_long job.killed sync.transferred
    sync.failed loop.completed loop.stalled dataset.events watch.heartbeat (docs/monitoring.md).
    Undelivered messages stay in the spool and are retried with backoff; a restarted watcher
    sends nothing twice. Exit 0, or 1 when --test could not reach a target.
    """
    from usrbatch.monitor.ledger import exclusive
    from usrbatch.monitor.watcher import Watcher, describe
    from usrbatch.monitor.watcher import send_test as run_test

    config = _config(config_path)
    if send_test:
        if not config.targets:
            raise UsrError("no targets configured", hint=f"Write {DEFAULT_CONFIG} (see docs/monitoring.md).")
        failed = 0
        for name, error in run_test(config):
            click.echo(f"{name}: {'sent' if error is None else 'FAILED: ' + error}")
            failed += error is not None
        return 1 if failed else 0
    find = _loop_dirs(loops, all_loops, root, loops_dir)
    state = (state_dir or config.settings.state_dir or default_state_dir()).expanduser().absolute()
    if config.path is None:
        click.echo(f"note: no watch config ({DEFAULT_CONFIG}); alerts are only printed here", err=True)

    with exclusive(state):
        auditlog.configure(state / "watch.jsonl")
        watcher = Watcher(
            config=config,
            state_dir=state,
            find_loops=find,
            dataset_events=dataset_events,
            heartbeat=True,
        )
        if not follow:
            for line in describe(watcher.poll(force_status=True)):
                click.echo(line)
            return 0
        stopping: list[int] = []

        def _stop(signum: int, _frame: object) -> None:
            stopping.append(signum)

        signal.signal(signal.SIGTERM, _stop)  # a scheduler's time limit sends SIGTERM (or SIGUSR1) first
        signal.signal(signal.SIGUSR1, _stop)
        click.echo(f"watching (state {state}); poll every {config.settings.poll_s:g} s", err=True)
        while not stopping:
            try:
                lines = describe(watcher.poll())
            except (UsrError, OSError) as exc:  # a watcher that runs for days outlives a bad poll
                message = exc.message if isinstance(exc, UsrError) else str(exc)
                auditlog.get_logger().warning("watch.poll_failed", error=message)
                lines = [f"poll failed (retrying): {message}"]
            for line in lines:
                click.echo(line)
            sys.stdout.flush()
            deadline = time.monotonic() + config.settings.poll_s
            while not stopping and time.monotonic() < deadline:
                time.sleep(min(0.2, config.settings.poll_s))
        click.echo("stopped", err=True)
        return 0


@click.command()
@click.argument("loops", nargs=-1)
@click.option(
    "--textfile",
    "textfile_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write DIR/usrbatch.prom atomically (node_exporter's textfile collector dir); else print.",
)
@_dir_option(
    "--state-dir", "The watcher's state dir, for its heartbeat (default: ~/.local/state/usrbatch/watch)."
)
@_dir_option("--root", "Datasets root whose .usrbatch/loops holds the loops (default: $USR_ROOT, else cwd).")
@_dir_option("--loops-dir", "Where loop dirs live.")
def metrics(
    loops: tuple[str, ...],
    textfile_dir: Path | None,
    state_dir: Path | None,
    root: Path | None,
    loops_dir: Path | None,
) -> None:
    """Prometheus metrics of LOOPs (default: every loop under --root/--loops-dir).

    usrbatch_job_state, usrbatch_loop_last_success_timestamp_seconds, usrbatch_loop_up,
    usrbatch_sync_bytes_total, usrbatch_sync_duration_seconds,
    usrbatch_watch_heartbeat_timestamp_seconds (docs/monitoring.md).
    """
    from usrbatch.monitor.loop_views import load_loops
    from usrbatch.monitor.metrics import collect, render, write_textfile

    find = _loop_dirs(loops, not loops, root, loops_dir)
    text = render(collect(load_loops(find()), (state_dir or default_state_dir()).expanduser()))
    if textfile_dir is None:
        click.echo(text, nl=False)
    else:
        click.echo(f"wrote {write_textfile(textfile_dir, text)}")
