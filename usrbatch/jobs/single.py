"""`usrbatch submit sync` / `usrbatch render sync`: one sync job without writing a loop spec.

The job is a one-step loop under the hood: its spec is built from the command line, validated by
the loop spec parser, written to `<loop dir>/spec.yaml` (so `submit-loop --resume`, resubmits and
the status hints find it) and submitted by `submit_loop`, so `usrbatch status|wait|logs|cancel`
and the audit log (`<loop dir>/audit.jsonl`) work on it unchanged.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from usrbatch.errors import JobError
from usrbatch.jobs.loop import LOOP_ID, MEM, NAME, TIME, LoopSpec, SpecError, parse_spec

SYNC_JOB_ACTIONS = ("pull", "push")
SPEC_FILE = "spec.yaml"
# Spec keys -> the command-line names a user typed (errors name what they can fix).
_OPTION_NAMES = {
    "dataset": "DATASET",
    "remote": "REMOTE",
    "root": "--root",
    "remotes_config": "--remotes-config",
    "name": "--name",
    "project": "--project",
    "account": "--account",
    "partition": "--queue/--partition",
    "mail": "--mail",
    "setup": "--setup",
    "resources.time": "--time",
    "resources.cpus": "--cpus",
    "resources.mem": "--mem",
    "resources.mem_per_core": "--mem-per-core",
    "steps[0].retries": "--retries",
    "steps[0].retry_delay": "--retry-delay",
}


@dataclass(frozen=True)
class SyncJobRequest:
    """What `usrbatch submit sync` / `render sync` was asked for (command-line values, unchecked)."""

    action: str
    dataset: str
    remote: str
    scheduler: str
    root: Path
    remotes_config: Path | None = None
    name: str | None = None
    time: str | None = None
    cpus: int | None = None
    mem: str | None = None
    mem_per_core: str | None = None
    queue: str | None = None
    project: str | None = None
    account: str | None = None
    directives: tuple[str, ...] = ()
    mail: str | None = None
    setup: tuple[str, ...] = ()
    retries: int = 3
    retry_delay: int = 5
    loops_dir: Path | None = None
    templates_dir: Path | None = None


def _bad(option: str, message: str, hint: str | None = None) -> JobError:
    return JobError(f"usrbatch submit sync: {option}: {message}", hint=hint)


def default_name(action: str, dataset: str, now: _dt.datetime | None = None) -> str:
    """`sync-<action>-<dataset with / as ->-<UTC time>`: every submit is a new job unless --name."""
    stamp = (now or _dt.datetime.now(_dt.UTC)).strftime("%Y%m%dT%H%M%S")
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", dataset).strip("-.") or "dataset"
    return f"sync-{action}-{slug}"[: 64 - len(stamp) - 1] + f"-{stamp}"


def _check(req: SyncJobRequest) -> None:
    """Checks with the option's name in the message (the spec parser checks the rest)."""
    if req.action not in SYNC_JOB_ACTIONS:
        raise _bad("ACTION", f"unknown sync action {req.action!r} (expected pull or push)")
    if req.time is not None and not TIME.match(req.time):
        raise _bad(
            "--time", f"invalid value {req.time!r}", hint="Use HH:MM:SS (or D-HH:MM:SS), e.g. 02:00:00."
        )
    for option, value in (("--mem", req.mem), ("--mem-per-core", req.mem_per_core)):
        if value is not None and not MEM.match(value):
            raise _bad(option, f"invalid value {value!r}", hint="Use a size such as 4G or 512M.")
    if req.name is not None and not LOOP_ID.match(req.name):
        raise _bad("--name", f"invalid value {req.name!r}", hint="Letters, digits, _ . - (at most 64).")
    if req.queue is not None and not NAME.match(req.queue):
        raise _bad("--queue/--partition", f"invalid value {req.queue!r}", hint="Letters, digits, _ . -.")
    if req.scheduler == "local":
        for option, value in (
            ("--queue/--partition", req.queue),
            ("--directive", req.directives),
            ("--project", req.project),
            ("--account", req.account),
        ):
            if value:
                raise _bad(
                    option, "the local scheduler takes no such request", hint="Use --scheduler sge|slurm."
                )
    if req.scheduler == "slurm":
        if req.project:
            raise _bad("--project", "an SGE option (-P)", hint="On Slurm use --account.")
        if req.mem_per_core:
            raise _bad("--mem-per-core", "an SGE resource", hint="On Slurm use --mem (per job).")
    if req.scheduler == "sge":
        if req.account:
            raise _bad("--account", "a Slurm option", hint="On SGE use --project (-P).")
        if req.mem and (req.cpus or 1) > 1:
            raise _bad(
                "--mem",
                "SGE on BU SCC asks for memory per core",
                hint="Give --mem-per-core instead (the total divided by --cpus).",
            )
    for line in req.directives:
        if not line.strip() or "\n" in line:
            raise _bad(
                "--directive", f"expected one directive line, got {line!r}", hint="e.g. '-l h_vmem=4G'."
            )


def spec_data(req: SyncJobRequest, name: str) -> dict[str, Any]:
    """The one-step loop spec (YAML-ready) for `req`; every path absolute."""
    _check(req)
    resources: dict[str, Any] = {}
    if req.time is not None:
        resources["time"] = req.time
    if req.cpus is not None:
        resources["cpus"] = req.cpus
    mem_per_core = req.mem_per_core
    if req.mem is not None:
        if req.scheduler == "sge":  # one core (checked above): the job's memory is the core's
            mem_per_core = req.mem
        else:
            resources["mem"] = req.mem
    if mem_per_core is not None:
        resources["mem_per_core"] = mem_per_core
    directives = list(req.directives)
    data: dict[str, Any] = {
        "name": name,
        "dataset": req.dataset,
        "root": str(req.root.expanduser().absolute()),
        "remote": req.remote,
        "scheduler": req.scheduler,
        "iterations": 1,
    }
    if req.remotes_config is not None:
        data["remotes_config"] = str(req.remotes_config.expanduser().absolute())
    if req.queue is not None:
        if req.scheduler == "sge":
            directives.insert(0, f"-q {req.queue}")
        else:
            data["partition"] = req.queue
    for key in ("project", "account", "mail"):
        if getattr(req, key) is not None:
            data[key] = getattr(req, key)
    if resources:
        data["resources"] = resources
    if req.setup:
        data["setup"] = list(req.setup)
    if directives:
        data["directives"] = {req.scheduler: directives}
    if req.loops_dir is not None:
        data["loops_dir"] = str(req.loops_dir.expanduser().absolute())
    if req.templates_dir is not None:
        data["templates_dir"] = str(req.templates_dir.expanduser().absolute())
    data["steps"] = [
        {
            "kind": "sync",
            "name": f"sync-{req.action}",
            "action": req.action,
            "retries": req.retries,
            "retry_delay": req.retry_delay,
        }
    ]
    return data


def build_spec(req: SyncJobRequest, *, name: str | None = None) -> LoopSpec:
    """The validated one-step loop; a bad value is reported under its command-line name."""
    name = name or req.name or default_name(req.action, req.dataset)
    data = spec_data(req, name)
    loops_dir = Path(data.get("loops_dir") or Path(data["root"]) / ".usrbatch" / "loops")
    try:
        return parse_spec(data, loops_dir / name / SPEC_FILE)
    except SpecError as exc:
        text = str(exc).split(": ", 1)[1] if ": " in str(exc) else str(exc)
        key, _, rest = text.partition(": ")
        label = next((opt for k, opt in _OPTION_NAMES.items() if key == k or key.endswith("." + k)), key)
        raise _bad(label, rest or text) from None


def render_sync_job(req: SyncJobRequest) -> str:
    """The job script `submit sync` would submit (its name left as --name, or a placeholder)."""
    from usrbatch.jobs.loop import plan_jobs
    from usrbatch.jobs.submit import render_job

    spec = build_spec(req)
    return render_job(spec, plan_jobs(spec, 1)[0])


def _check_submittable(spec: LoopSpec, req: SyncJobRequest) -> None:
    """What only a submit needs: the root, the dataset to push, the remote's entry."""
    if not spec.root.is_dir():
        raise _bad("--root", f"datasets root not found: {spec.root}", hint="Give --root or set $USR_ROOT.")
    if req.action == "push" and not (spec.root / spec.dataset / "records.parquet").is_file():
        raise _bad(
            "DATASET",
            f"no dataset {spec.dataset} under {spec.root} (no records.parquet) to push",
            hint="Check the dataset id and --root (`usr ls --root ROOT` lists them).",
        )
    if spec.remotes_config is not None and not spec.remotes_config.is_file():
        raise _bad("--remotes-config", f"file not found: {spec.remotes_config}")
    from usrbatch.remotes import get_remote

    get_remote(req.remote, spec.remotes_config)  # names the file and the known remotes if missing


def submit_sync_job(req: SyncJobRequest, *, emit: Callable[[str], None] = print) -> LoopSpec:
    """Validate, write `<loop dir>/spec.yaml` and submit the one job; returns its loop spec."""
    from usrbatch.jobs.submit import submit_loop

    spec = build_spec(req)
    _check_submittable(spec, req)
    spec.loop_dir.mkdir(parents=True, exist_ok=True)
    spec_file = spec.loop_dir / SPEC_FILE
    text = yaml.safe_dump(spec_data(req, spec.loop_id), sort_keys=False)
    if not spec_file.exists() or spec_file.read_text(encoding="utf-8") != text:
        from usrbatch.files import atomic_write_text

        atomic_write_text(spec_file, text)
    submit_loop(spec, emit=emit)
    return spec
