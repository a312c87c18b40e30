"""`usrbatch`: the job-plane CLI. Thin: parse, call one function in usrbatch.jobs, render."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from usrbatch import __version__
from usrbatch.cli.common import run_cli
from usrbatch.cli.lazy import LazyCommand, LazyGroup
from usrbatch.errors import JobError

if TYPE_CHECKING:
    from usrbatch.jobs.single import SyncJobRequest

ROOT_OPT = click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Datasets root whose .usrbatch/loops holds LOOP (default: $USR_ROOT, else the current dir).",
)
TEMPLATES_OPT = click.option(
    "--templates-dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="Your own templates (searched before the shipped ones; overrides templates_dir: in the spec).",
)
LOOPS_DIR_OPT = click.option(
    "--loops-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where loop dirs live.",
)


# Commands living in other modules, imported only when they run (usrbatch/cli/lazy.py): the monitor's
# structlog/yaml/rich imports stay out of `usrbatch --help` and `usrbatch --version`.
MONITOR = "usrbatch.cli.monitor_cmds"
LAZY_COMMANDS = {
    "watch": LazyCommand(
        f"{MONITOR}:watch", "Follow loops' audit logs and the scheduler; alert the configured targets."
    ),
    "metrics": LazyCommand(
        f"{MONITOR}:metrics", "Prometheus metrics of LOOPs (default: every loop under --root/--loops-dir)."
    ),
}


class UsrbatchGroup(LazyGroup):
    """`usrbatch render sync ...` (no --config) renders a single sync job, not a loop step named sync."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        if args[:2] == ["render", "sync"] and not any(
            a == "--config" or a.startswith("--config=") for a in args
        ):
            return "render", render_sync_cmd, args[2:]
        return super().resolve_command(ctx, args)


@click.group(
    name="usrbatch",
    cls=UsrbatchGroup,
    lazy=LAZY_COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, prog_name="usrbatch")
def usrbatch() -> None:
    """Scheduler-native batch loops over USR datasets."""


@usrbatch.command()
@click.argument("step")
@click.option("--config", "config", required=True, type=click.Path(dir_okay=False), help="Loop spec (YAML).")
@click.option("--iteration", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "--scheduler", type=click.Choice(["local", "sge", "slurm"]), default=None, help="Override the spec."
)
@TEMPLATES_OPT
def render(step: str, config: str, iteration: int, scheduler: str | None, templates_dir: Path | None) -> None:
    """Print the job script of STEP (a step name in the spec) for one iteration.

    `usrbatch render sync pull|push DATASET REMOTE [options]` (no --config) prints the script of a
    single sync job instead: the same arguments as `usrbatch submit sync`.
    """
    from usrbatch.jobs.loop import load_spec, plan_jobs
    from usrbatch.jobs.submit import render_job

    spec = load_spec(config, scheduler=scheduler, templates_dir=templates_dir)
    jobs = [j for j in plan_jobs(spec, iteration) if j.iteration == iteration and step in (j.step, j.key)]
    if not jobs:
        raise JobError(
            f"{spec.path.name}: no step named '{step}' (steps: {', '.join(s.name for s in spec.steps)})"
        )
    click.echo(render_job(spec, jobs[0]), nl=False)


def sync_job_options(func: Callable[..., None]) -> Callable[..., None]:
    """The arguments of `usrbatch submit sync` and `usrbatch render sync`."""
    options = [
        click.argument("action", type=click.Choice(["pull", "push"])),
        click.argument("dataset"),
        click.argument("remote"),
        click.option(
            "--scheduler",
            type=click.Choice(["local", "sge", "slurm"]),
            required=True,
            help="Where to run it.",
        ),
        click.option(
            "--root",
            type=click.Path(file_okay=False, path_type=Path),
            default=None,
            help="Local datasets root (default: $USR_ROOT, else the current dir).",
        ),
        click.option(
            "--remotes-config",
            type=click.Path(dir_okay=False, path_type=Path),
            default=None,
            help="remotes.yaml (default: usr's).",
        ),
        click.option("--name", default=None, help="Job (loop) id; default sync-ACTION-DATASET-<UTC time>."),
        click.option("--time", default=None, help="Wall time HH:MM:SS (SGE -l h_rt, Slurm --time)."),
        click.option(
            "--cpus", type=click.IntRange(min=1), default=None, help="Cores (SGE -pe omp, Slurm -c)."
        ),
        click.option("--mem", default=None, help="Memory, e.g. 4G (Slurm --mem; SGE: per core, one core)."),
        click.option("--mem-per-core", default=None, help="SGE -l mem_per_core, e.g. 4G."),
        click.option("--queue", "--partition", "queue", default=None, help="SGE -q / Slurm --partition."),
        click.option("--project", default=None, help="SGE project (-P)."),
        click.option("--account", default=None, help="Slurm account (--account)."),
        click.option(
            "--directive",
            "directives",
            multiple=True,
            help="Extra directive line (repeatable), e.g. '-l h_vmem=4G'.",
        ),
        click.option("--mail", default=None, help="Address told when the job ends or fails."),
        click.option(
            "--setup", multiple=True, help="Shell line run before usr (repeatable): module load ..."
        ),
        click.option("--retries", type=click.IntRange(min=1), default=3, show_default=True),
        click.option("--retry-delay", type=click.IntRange(min=0), default=5, show_default=True),
        LOOPS_DIR_OPT,
        TEMPLATES_OPT,
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _sync_request(params: dict) -> SyncJobRequest:
    from usrbatch.jobs.single import SyncJobRequest

    root = params.pop("root") or Path(os.environ.get("USR_ROOT") or ".")
    return SyncJobRequest(
        root=root, directives=tuple(params.pop("directives")), setup=tuple(params.pop("setup")), **params
    )


@click.command("render", context_settings={"help_option_names": ["-h", "--help"]})
@sync_job_options
def render_sync_cmd(**params: object) -> None:
    """Print the script `usrbatch submit sync` would submit with the same arguments; submit nothing."""
    from usrbatch.jobs.single import render_sync_job

    click.echo(render_sync_job(_sync_request(params)), nl=False)


@usrbatch.group()
def submit() -> None:
    """Submit a single job (no loop spec needed)."""


@submit.command("sync")
@sync_job_options
def submit_sync_cmd(**params: object) -> None:
    """Render and submit one `usr pull|push DATASET REMOTE` job (SGE: on the transfer node, -l download).

    It is a one-step loop: `usrbatch status|wait|logs|cancel ID` follow it, and its audit log is
    <loop dir>/audit.jsonl.
    """
    from usrbatch.jobs.single import submit_sync_job

    spec = submit_sync_job(_sync_request(params), emit=click.echo)
    click.echo(f"loop {spec.loop_id}: {spec.loop_dir}")
    click.echo(f"follow it with: usrbatch status {spec.loop_id} --loops-dir {spec.loops_dir}")


@usrbatch.command("submit-loop")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option(
    "--iterations", type=click.IntRange(min=1), default=None, help="Override the spec's iterations."
)
@click.option("--dry-run", is_flag=True, help="Print every script and submit command; submit nothing.")
@click.option(
    "--resume", is_flag=True, help="Cancel and resubmit the jobs that failed (and everything after)."
)
@click.option(
    "--scheduler", type=click.Choice(["local", "sge", "slurm"]), default=None, help="Override the spec."
)
@LOOPS_DIR_OPT
@TEMPLATES_OPT
@click.option(
    "--wait", "wait_s", type=float, default=None, help="Then wait up to this many seconds and print status."
)
def submit_loop_cmd(
    config: str,
    iterations: int | None,
    dry_run: bool,
    resume: bool,
    scheduler: str | None,
    loops_dir: Path | None,
    templates_dir: Path | None,
    wait_s: float | None,
) -> None:
    """Render and submit every job of the loop in CONFIG, each after its predecessor.

    Running it again resumes: jobs already submitted are not submitted twice.
    """
    from usrbatch.jobs.loop import load_spec
    from usrbatch.jobs.submit import submit_loop

    spec = load_spec(config, scheduler=scheduler, loops_dir=loops_dir, templates_dir=templates_dir)
    result = submit_loop(spec, iterations=iterations, dry_run=dry_run, resume=resume, emit=click.echo)
    if dry_run:
        click.echo(
            f"dry run: {len(result.submitted)} job(s) would be submitted to {spec.scheduler}; nothing submitted"
        )
        return
    click.echo(f"loop {spec.loop_id}: {result.loop_dir}")
    if wait_s is not None:
        sys.exit(_wait_and_report(result.loop_dir, wait_s, as_json=False))


def _wait_and_report(loop_dir: Path, timeout: float, *, as_json: bool) -> int:
    """Wait, print the status, and return `usrbatch status`'s exit code for it (3: still running
    when the timeout passed; 4: the scheduler did not answer)."""
    from usrbatch.jobs.control import is_settled, wait_loop
    from usrbatch.jobs.status import EXIT_RUNNING, format_status, status_exit_code

    status = wait_loop(loop_dir, timeout=timeout)
    click.echo(json.dumps(status.to_json(), indent=1) if as_json else format_status(status))
    if not is_settled(status):
        click.echo(f"loop {status.loop_id} still {status.state} after {timeout:.0f}s", err=True)
        return EXIT_RUNNING
    return status_exit_code(status)


@usrbatch.command()
@click.argument("loop")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@ROOT_OPT
@LOOPS_DIR_OPT
def status(loop: str, as_json: bool, root: Path | None, loops_dir: Path | None) -> int:
    """State, exit code, duration and bytes moved of every job of LOOP (a loop id or dir).

    \b
    Exit codes (for scripts that poll a loop):
      0  completed: every job succeeded
      1  failed: a job failed, or the chain was cancelled / refused to run
      3  still running, pending or held (or not submitted yet)
      4  unknown: the scheduler could not be asked (qstat/squeue/sacct unreachable)
      2  usage error (no such loop, bad arguments)
    """
    from usrbatch.jobs.control import resolve_loop
    from usrbatch.jobs.status import format_status, loop_status, status_exit_code

    st = loop_status(resolve_loop(loop, root=root, loops_dir=loops_dir))
    click.echo(json.dumps(st.to_json(), indent=1) if as_json else format_status(st))
    return status_exit_code(st)


@usrbatch.command()
@click.argument("loop")
@click.option("--timeout", type=float, default=600.0, show_default=True, help="Seconds to wait at most.")
@click.option("--json", "as_json", is_flag=True)
@ROOT_OPT
@LOOPS_DIR_OPT
def wait(loop: str, timeout: float, as_json: bool, root: Path | None, loops_dir: Path | None) -> int:
    """Wait until LOOP completes or stops on a failure (polling the scheduler once per poll).

    \b
    Exit codes (the same as `usrbatch status`):
      0  completed: every job succeeded
      1  failed: a job failed, or the chain was cancelled / refused to run
      3  still running or pending when --timeout passed
      4  unknown: the scheduler could not be asked (qstat/squeue/sacct unreachable)
      2  usage error (no such loop, bad arguments)
    """
    from usrbatch.jobs.control import resolve_loop

    return _wait_and_report(resolve_loop(loop, root=root, loops_dir=loops_dir), timeout, as_json=as_json)


@usrbatch.command()
@click.argument("loop")
@click.argument("step", required=False)
@ROOT_OPT
@LOOPS_DIR_OPT
def logs(loop: str, step: str | None, root: Path | None, loops_dir: Path | None) -> None:
    """Print the job logs of LOOP (only STEP's when given: a step name, kind or job key)."""
    from usrbatch.jobs.control import loop_logs, resolve_loop

    for key, path in loop_logs(resolve_loop(loop, root=root, loops_dir=loops_dir), step):
        click.echo(f"==> {key}: {path} <==")
        if path.exists():
            with open(path, encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    click.echo(line, nl=False)
        else:
            click.echo("(no log yet)")


@usrbatch.command()
@click.argument("loop")
@ROOT_OPT
@LOOPS_DIR_OPT
def cancel(loop: str, root: Path | None, loops_dir: Path | None) -> None:
    """Cancel every job of LOOP the scheduler still holds (pending, held, Eqw, running)."""
    from usrbatch.jobs.control import cancel_loop, resolve_loop

    loop_dir = resolve_loop(loop, root=root, loops_dir=loops_dir)
    ids = cancel_loop(loop_dir)
    click.echo(f"cancelled {len(ids)} job(s){': ' + ' '.join(ids) if ids else ''}")


@usrbatch.command(
    "job-event",
    context_settings={"ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def job_event(args: tuple[str, ...]) -> None:
    """Record job.started / job.finished / job.retry / predecessor checks (used by job scripts)."""
    from usrbatch.jobs import record

    sys.exit(record.main(list(args)))


@usrbatch.group()
def step() -> None:
    """Run a built-in step in this process (what the job scripts run)."""


@step.command(
    "densegen",
    context_settings={"ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def step_densegen(args: tuple[str, ...]) -> None:
    """Build dense TFBS arrays and append them to a dataset (see --help)."""
    from usrbatch.steps import densegen

    sys.exit(densegen.main(list(args)))


@step.command(
    "infer", context_settings={"ignore_unknown_options": True, "help_option_names": []}, add_help_option=False
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def step_infer(args: tuple[str, ...]) -> None:
    """Score a dataset's sequences (k-mer Markov log-likelihood, GC) into infer__* overlays (see --help)."""
    from usrbatch.steps import infer

    sys.exit(infer.main(list(args)))


@usrbatch.command()
@click.option(
    "--workdir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Keep everything here."
)
@click.option("--iterations", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--timeout", type=float, default=300.0, show_default=True, help="Seconds to wait for the loop.")
def demo(workdir: Path | None, iterations: int, timeout: float) -> None:
    """Run a DenseGen -> sync push -> Infer -> sync push loop on the local scheduler and a local remote."""
    from usrbatch.jobs.demo import run_demo

    ok = run_demo(workdir=workdir, iterations=iterations, timeout=timeout, emit=click.echo)
    if not ok:
        sys.exit(1)


def main(argv: list[str] | None = None) -> None:
    sys.exit(run_cli(usrbatch, argv))


if __name__ == "__main__":
    main()
