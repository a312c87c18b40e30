"""The loop spec: YAML validated into frozen values (LoopSpec, StepSpec, Resources, JobEnv,
Resubmit), every error naming the file, the key and the fix (SpecError).

A loop spec names a dataset, a datasets root, a remote, a scheduler and the steps of one iteration;
loop_plan.plan_jobs turns it into jobs, loop_state records them.

Over ~400 lines on purpose: it is one schema (the keys, their defaults and their checks), kept in
one module so every key of loop.yaml is found in one place.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from usrbatch.errors import JobError
from usrbatch.jobs.scheduler import SCHEDULERS
from usrbatch.jobs.templates import STEP_KINDS

LOOP_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
TIME = re.compile(r"^(\d+-)?\d{1,3}:\d{2}:\d{2}$")
MEM = re.compile(r"^\d+(\.\d+)?[KMGT]?B?$", re.IGNORECASE)
NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
SYNC_ACTIONS = ("push", "pull", "diff")
# The default iteration is the "write here, push there" topology (docs/loops.md): every step that
# writes the local root is followed by a push, so the remote always extends the local history.
DEFAULT_STEPS: tuple[dict[str, Any], ...] = (
    {"kind": "densegen"},
    {"kind": "sync", "action": "push"},
    {"kind": "infer"},
    {"kind": "sync", "action": "push", "name": "sync-push-infer"},
)
# Step kinds that write the loop's root unless the step says `writes: false`.
WRITING_KINDS = frozenset({"densegen", "infer"})
TOP_KEYS = {
    "name": "loop id (default: the config file name without extension)",
    "dataset": "dataset id, e.g. densegen/demo",
    "root": "local datasets root",
    "remote": "remote name in remotes.yaml (needed by sync steps)",
    "remotes_config": "remotes.yaml path",
    "scheduler": "local|sge|slurm",
    "project": "SGE project (-P)",
    "account": "Slurm account (--account)",
    "partition": "Slurm partition (--partition)",
    "iterations": "number of iterations",
    "resources": "default resources for every step (time, cpus, mem, mem_per_core, gpus, gpu_type, gpu_capability)",
    "setup": "shell lines every job runs before its step (module load ..., source .../activate)",
    "env": "environment variables every job exports (no secrets: source them from a file in setup:)",
    "directives": "extra scheduler directive lines per scheduler ({sge: [...], slurm: [...]})",
    "mail": "e-mail address told when a job ends or fails (SGE -m ea -M, Slurm --mail-type=END,FAIL)",
    "steps": "the steps of one iteration",
    "loops_dir": "where loop dirs live (default <root>/.usrbatch/loops)",
    "templates_dir": "your own template directory (searched before the shipped one)",
    "python": "interpreter the jobs run usrbatch with (default: this one)",
    "workdir": "directory jobs start in (default: the loop dir)",
}
RESOURCE_KEYS = ("time", "cpus", "mem", "mem_per_core", "gpus", "gpu_type", "gpu_capability")
CAPABILITY = re.compile(r"^\d+(\.\d+)?$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAIL = re.compile(r"^[^@\s,]+@[^@\s,]+$")
JOB_KEYS = ("setup", "env", "directives", "mail")  # loop-wide defaults, per-step overrides
# Per kind: allowed keys -> default (None: optional, no default; REQUIRED: must be given).
REQUIRED = object()
KIND_KEYS: dict[str, dict[str, Any]] = {
    "densegen": {
        "tfbs": None,
        "count": 8,
        "length": 60,
        "seed": 7,
        "plan": "demo",
        "library_size": 6,
        "time_limit": 10,
        "command": None,
    },
    "sync": {"action": REQUIRED, "retries": 3, "retry_delay": 5},
    "infer": {"overwrite": False, "command": None},
    "shell": {"command": REQUIRED},
}
ACTOR_TOOLS = {"densegen": "densegen", "infer": "infer", "sync": "usr", "shell": "usrbatch"}


@dataclass(frozen=True)
class Resources:
    """What one job asks the scheduler for."""

    time: str = "01:00:00"
    cpus: int = 1
    mem: str | None = None
    mem_per_core: str | None = None
    project: str | None = None
    account: str | None = None
    partition: str | None = None
    gpus: int = 0
    gpu_type: str | None = None
    gpu_capability: str | None = None  # minimum compute capability, e.g. "8.9" (SGE gpu_c)


@dataclass(frozen=True)
class JobEnv:
    """How a job's shell is prepared: setup lines, exported variables, extra directives, mail."""

    setup: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    directives: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (scheduler, lines)
    mail: str | None = None

    def directives_for(self, scheduler: str) -> tuple[str, ...]:
        return dict(self.directives).get(scheduler, ())


@dataclass(frozen=True)
class StepSpec:
    name: str
    kind: str
    resources: Resources
    args: dict[str, Any]
    writes: bool = False  # writes the loop's root (densegen, infer; `writes:` overrides)
    job_env: JobEnv = JobEnv()
    shards: int = 1  # > 1: an array job of this many tasks (SGE -t, Slurm --array, N local processes)
    after: tuple[str, ...] = ()  # step names this step waits for (default: the step before it)
    resubmit: Resubmit | None = None


RESUBMIT_CAUSES = ("walltime", "node_failure")


@dataclass(frozen=True)
class Resubmit:
    """`resubmit: {on: [walltime, node_failure], max: N, args: "--resume"}`: a job the scheduler
    killed for one of `on` is submitted again (at most `max` times), its command given `args`."""

    on: tuple[str, ...] = ("walltime",)
    max: int = 1
    args: str = ""


@dataclass(frozen=True)
class LoopSpec:
    path: Path
    loop_id: str
    dataset: str
    root: Path
    remote: str | None
    remotes_config: Path | None
    scheduler: str
    iterations: int
    steps: tuple[StepSpec, ...]
    loops_dir: Path
    templates_dir: Path | None
    python: str
    workdir: Path | None

    @property
    def loop_dir(self) -> Path:
        return self.loops_dir / self.loop_id


def check_local_files(spec: LoopSpec) -> None:
    """Before submitting from this machine: files the spec names must exist (render does not need them)."""
    if spec.remotes_config is not None and not spec.remotes_config.is_file():
        raise _err(spec.path, "remotes_config", f"file not found: {spec.remotes_config}")


class SpecError(JobError):
    """A loop spec problem: `<file>: <key>: <what is wrong>`."""


def _err(path: Path, key: str, message: str) -> SpecError:
    return SpecError(f"{path.name}: {key}: {message}")


def _check_keys(path: Path, where: str, data: dict, allowed: list[str]) -> None:
    for key in data:
        if key not in allowed:
            label = f"{where}.{key}" if where else str(key)
            raise _err(path, label, f"unknown key '{key}' (expected one of: {', '.join(allowed)})")


def _str(path: Path, key: str, value: Any, *, pattern: re.Pattern | None = None, hint: str = "") -> str:
    if not isinstance(value, str | int | float) or isinstance(value, bool) or str(value).strip() == "":
        raise _err(path, key, f"expected a non-empty string, got {value!r}")
    text = str(value).strip()
    if pattern is not None and not pattern.match(text):
        raise _err(path, key, f"invalid value {text!r}{(' (' + hint + ')') if hint else ''}")
    return text


def _int(path: Path, key: str, value: Any, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _err(path, key, f"expected an integer >= {minimum}, got {value!r}")
    return value


def _resources(path: Path, where: str, data: Any, base: Resources) -> Resources:
    if data is None:
        return base
    if not isinstance(data, dict):
        raise _err(
            path, where, f"expected a mapping of {', '.join(RESOURCE_KEYS)}, got {type(data).__name__}"
        )
    _check_keys(path, where, data, list(RESOURCE_KEYS))
    values = asdict(base)
    if "time" in data:
        values["time"] = _str(path, f"{where}.time", data["time"], pattern=TIME, hint="use HH:MM:SS")
    if "cpus" in data:
        values["cpus"] = _int(path, f"{where}.cpus", data["cpus"], minimum=1)
    for key in ("mem", "mem_per_core"):
        if key in data:
            values[key] = _str(path, f"{where}.{key}", data[key], pattern=MEM, hint="use e.g. 4G or 512M")
    if "gpus" in data:
        values["gpus"] = _int(path, f"{where}.gpus", data["gpus"], minimum=0)
    if "gpu_type" in data:
        values["gpu_type"] = _str(path, f"{where}.gpu_type", data["gpu_type"], pattern=NAME)
    if "gpu_capability" in data:
        values["gpu_capability"] = _str(
            path, f"{where}.gpu_capability", data["gpu_capability"], pattern=CAPABILITY, hint="use e.g. 8.9"
        )
    if (values["gpu_type"] or values["gpu_capability"]) and not values["gpus"]:
        raise _err(path, f"{where}.gpus", "required (>= 1) when gpu_type or gpu_capability is set")
    return Resources(**values)


def _job_env(path: Path, where: str, data: dict, base: JobEnv) -> JobEnv:
    """setup/env/directives/mail of `data` over `base`: env merges by name, the others replace."""
    prefix = f"{where}." if where else ""
    setup, env, directives, mail = base.setup, dict(base.env), dict(base.directives), base.mail
    if "setup" in data:
        raw = data["setup"]
        raw = [raw] if isinstance(raw, str) else raw
        if not isinstance(raw, list) or not all(isinstance(x, str) and x.strip() for x in raw):
            raise _err(path, f"{prefix}setup", "expected a list of shell lines (strings)")
        setup = tuple(raw)
    if "env" in data:
        raw = data["env"]
        if not isinstance(raw, dict):
            raise _err(path, f"{prefix}env", f"expected a mapping NAME: value, got {type(raw).__name__}")
        from usrbatch.redaction import has_secret

        for key, value in raw.items():
            label = f"{prefix}env.{key}"
            if not isinstance(key, str) or not ENV_NAME.match(key):
                raise _err(
                    path, label, "invalid variable name (letters, digits, _; not starting with a digit)"
                )
            if key.startswith(("USRBATCH_", "USR_ACTOR_")):
                raise _err(path, label, "USRBATCH_* and USR_ACTOR_* are set by usrbatch; choose another name")
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                raise _err(path, label, f"expected a string or number, got {value!r}")
            if has_secret(f"{key}={value}"):
                raise _err(
                    path,
                    label,
                    "looks like a secret; job scripts never hold one. Keep it in a file only you can "
                    "read and load it in setup: (e.g. `source ~/.config/usrbatch/secrets.sh`)",
                )
            env[key] = str(value)
    if "directives" in data:
        raw = data["directives"]
        if not isinstance(raw, dict):
            raise _err(path, f"{prefix}directives", "expected a mapping {sge: [lines], slurm: [lines]}")
        for sched, lines in raw.items():
            label = f"{prefix}directives.{sched}"
            if sched not in ("sge", "slurm"):
                raise _err(path, label, "unknown scheduler (expected sge or slurm)")
            lines = [lines] if isinstance(lines, str) else lines
            if not isinstance(lines, list) or not all(
                isinstance(x, str) and x.strip() and "\n" not in x for x in lines
            ):
                raise _err(path, label, "expected a list of one-line directives, e.g. '-l h_vmem=4G'")
            directives[sched] = tuple(x.strip() for x in lines)
    if "mail" in data:
        mail = _str(path, f"{prefix}mail", data["mail"], pattern=MAIL, hint="one address, e.g. me@bu.edu")
    return JobEnv(setup=setup, env=tuple(env.items()), directives=tuple(directives.items()), mail=mail)


def _resolve(base: Path, value: str) -> Path:
    p = Path(os.path.expandvars(value)).expanduser()
    return p if p.is_absolute() else (base / p).absolute()


def _step(
    path: Path, index: int, raw: Any, base_res: Resources, base_dir: Path, base_env: JobEnv = JobEnv()
) -> StepSpec:
    where = f"steps[{index}]"
    if not isinstance(raw, dict):
        raise _err(path, where, f"expected a mapping with a 'kind', got {raw!r}")
    if "kind" not in raw:
        raise _err(path, f"{where}.kind", f"missing (expected one of: {', '.join(STEP_KINDS)})")
    kind = raw["kind"]
    if kind not in STEP_KINDS:
        raise _err(path, f"{where}.kind", f"unknown step kind '{kind}' (expected {', '.join(STEP_KINDS)})")
    spec_keys = KIND_KEYS[kind]
    _check_keys(
        path,
        where,
        raw,
        ["kind", "name", "resources", "writes", "shards", "after", "resubmit", *JOB_KEYS, *spec_keys],
    )
    args: dict[str, Any] = {}
    for key, default in spec_keys.items():
        if key in raw:
            args[key] = raw[key]
        elif default is REQUIRED:
            raise _err(path, f"{where}.{key}", f"required for a {kind} step")
        else:
            args[key] = default
    if kind == "sync":
        if args["action"] not in SYNC_ACTIONS:
            raise _err(
                path, f"{where}.action", f"unknown sync action {args['action']!r} (expected push, pull, diff)"
            )
        args["retries"] = _int(path, f"{where}.retries", args["retries"], minimum=1)
        args["retry_delay"] = _int(path, f"{where}.retry_delay", args["retry_delay"], minimum=0)
    if kind == "densegen":
        for key in ("count", "length", "library_size", "time_limit"):
            args[key] = _int(path, f"{where}.{key}", args[key], minimum=1)
        args["seed"] = _int(path, f"{where}.seed", args["seed"])
        args["plan"] = _str(path, f"{where}.plan", args["plan"], pattern=NAME)
        if args["command"] is None:
            tfbs = _resolve(base_dir, str(args["tfbs"])) if args["tfbs"] else default_tfbs()
            if tfbs is None or not tfbs.is_file():
                raise _err(
                    path, f"{where}.tfbs", f"TF binding-site table not found: {tfbs or 'examples/tfbs.csv'}"
                )
            args["tfbs"] = str(tfbs)
    if kind == "infer" and not isinstance(args["overwrite"], bool):
        raise _err(path, f"{where}.overwrite", f"expected true or false, got {args['overwrite']!r}")
    for key in ("command",):
        if key in args and args[key] is not None:
            args[key] = _str(path, f"{where}.{key}", args[key])
    default_name = f"sync-{args['action']}" if kind == "sync" else kind
    name = _str(
        path, f"{where}.name", raw.get("name", default_name), pattern=NAME, hint="letters, digits, _ . -"
    )
    resources = _resources(path, f"{where}.resources", raw.get("resources"), base_res)
    writes = raw.get("writes", kind in WRITING_KINDS)
    if not isinstance(writes, bool):
        raise _err(path, f"{where}.writes", f"expected true or false, got {writes!r}")
    if kind == "sync" and writes:
        raise _err(path, f"{where}.writes", "a sync step cannot be marked as writing (remove writes:)")
    job_env = _job_env(path, where, raw, base_env)
    shards = _int(path, f"{where}.shards", raw.get("shards", 1), minimum=1)
    if shards > 1 and kind == "sync":
        raise _err(path, f"{where}.shards", "a sync step runs once (shards: only on densegen, infer, shell)")
    after = raw.get("after", [])
    after = [after] if isinstance(after, str) else after
    if not isinstance(after, list) or not all(isinstance(a, str) and a for a in after):
        raise _err(path, f"{where}.after", "expected a list of earlier step names")
    return StepSpec(
        name=name,
        kind=kind,
        resources=resources,
        args=args,
        writes=writes,
        job_env=job_env,
        shards=shards,
        after=tuple(after),
        resubmit=_resubmit(path, f"{where}.resubmit", raw.get("resubmit")),
    )


def _resubmit(path: Path, where: str, raw: Any) -> Resubmit | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise _err(path, where, "expected a mapping {on: [walltime, node_failure], max: N, args: '--resume'}")
    # YAML 1.1 (PyYAML) reads a bare `on:` key as the boolean true: it is the `on` key.
    raw = {("on" if k is True else k): v for k, v in raw.items()}
    _check_keys(path, where, raw, ["on", "max", "args"])
    on = raw.get("on", ["walltime"])
    on = [on] if isinstance(on, str) else on
    if not isinstance(on, list) or not on or any(c not in RESUBMIT_CAUSES for c in on):
        raise _err(path, f"{where}.on", f"expected a list of {', '.join(RESUBMIT_CAUSES)}, got {on!r}")
    args = raw.get("args", "")
    if not isinstance(args, str) or "\n" in args:
        raise _err(path, f"{where}.args", "expected one line of arguments, e.g. --resume")
    return Resubmit(
        on=tuple(on), max=_int(path, f"{where}.max", raw.get("max", 1), minimum=1), args=args.strip()
    )


def default_tfbs() -> Path | None:
    """The shipped example motif table (examples/tfbs.csv in a checkout), if present."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "_examples" / "tfbs.csv", here.parent.parent / "examples" / "tfbs.csv"):
        if candidate.is_file():
            return candidate
    return None


def parse_spec(data: Any, path: Path) -> LoopSpec:
    """Validate a loaded YAML document; raises SpecError naming the first bad key."""
    path = Path(path).absolute()
    if not isinstance(data, dict):
        raise SpecError(f"{path.name}: expected a mapping at the top level (dataset:, root:, steps: ...)")
    _check_keys(path, "", data, list(TOP_KEYS))
    base_dir = path.parent
    for key in ("dataset", "root"):
        if key not in data:
            raise _err(path, key, f"required ({TOP_KEYS[key]})")
    dataset = _str(path, "dataset", data["dataset"])
    try:
        from usrbatch.dataset.layout import normalize_dataset_id

        dataset = normalize_dataset_id(dataset)
    except JobError:
        raise
    except Exception as exc:  # DatasetError: keep its explanation, name the key
        raise _err(path, "dataset", str(exc)) from exc
    root = _resolve(base_dir, _str(path, "root", data["root"]))
    scheduler = data.get("scheduler", "local")
    if scheduler not in SCHEDULERS:
        raise _err(path, "scheduler", f"unknown scheduler {scheduler!r} (expected {', '.join(SCHEDULERS)})")
    loop_id = _str(
        path, "name", data.get("name", path.stem), pattern=LOOP_ID, hint="letters, digits, _ . - (max 64)"
    )
    iterations = _int(path, "iterations", data.get("iterations", 1), minimum=1)
    names = {}
    for key in ("project", "account", "partition"):
        names[key] = _str(path, key, data[key], pattern=NAME) if data.get(key) is not None else None
    base_res = _resources(path, "resources", data.get("resources"), Resources(**names))
    raw_steps = data.get("steps", list(DEFAULT_STEPS))
    if not isinstance(raw_steps, list) or not raw_steps:
        raise _err(path, "steps", "expected a non-empty list of steps")
    base_env = _job_env(path, "", data, JobEnv())
    steps = tuple(_step(path, i, raw, base_res, base_dir, base_env) for i, raw in enumerate(raw_steps))
    if scheduler == "slurm":
        for i, step in enumerate(steps):
            if step.resources.gpu_capability:
                raise _err(
                    path,
                    f"steps[{i}].resources.gpu_capability",
                    "Slurm has no compute-capability request; use gpu_type: (--gres=gpu:TYPE:N) or "
                    "directives: {slurm: ['--constraint=...']}",
                )
    seen: dict[str, int] = {}
    for i, step in enumerate(steps):
        if step.name in seen:
            raise _err(
                path,
                f"steps[{i}].name",
                f"duplicate step name '{step.name}' (also steps[{seen[step.name]}]); set name:",
            )
        for pred in step.after:
            if pred not in seen:
                known = ", ".join(seen) or "none"
                raise _err(
                    path,
                    f"steps[{i}].after",
                    f"'{pred}' is not an earlier step (earlier steps: {known}); list steps in run order",
                )
        seen[step.name] = i
    remote = _str(path, "remote", data["remote"], pattern=NAME) if data.get("remote") is not None else None
    if remote is None and any(s.kind == "sync" for s in steps):
        raise _err(path, "remote", "required when the loop has a sync step")
    remotes_config = (
        _resolve(base_dir, _str(path, "remotes_config", data["remotes_config"]))
        if data.get("remotes_config")
        else None
    )
    loops_dir = (
        _resolve(base_dir, _str(path, "loops_dir", data["loops_dir"]))
        if data.get("loops_dir")
        else root / ".usrbatch" / "loops"
    )
    templates_dir = (
        _resolve(base_dir, _str(path, "templates_dir", data["templates_dir"]))
        if data.get("templates_dir")
        else None
    )
    if templates_dir is not None and not templates_dir.is_dir():
        raise _err(path, "templates_dir", f"directory not found: {templates_dir}")
    python = _str(path, "python", data["python"]) if data.get("python") else sys.executable
    workdir = _resolve(base_dir, _str(path, "workdir", data["workdir"])) if data.get("workdir") else None
    return LoopSpec(
        path=path,
        loop_id=loop_id,
        dataset=dataset,
        root=root,
        remote=remote,
        remotes_config=remotes_config,
        scheduler=scheduler,
        iterations=iterations,
        steps=steps,
        loops_dir=loops_dir,
        templates_dir=templates_dir,
        python=python,
        workdir=workdir,
    )


def load_spec(
    path: Path | str,
    *,
    scheduler: str | None = None,
    loops_dir: Path | None = None,
    templates_dir: Path | None = None,
) -> LoopSpec:
    """Read and validate a loop spec file (optionally overriding scheduler / loops dir / templates dir)."""
    p = Path(path).expanduser().absolute()
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise JobError(f"loop spec not found: {p}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"{p.name}: not valid YAML: {exc}") from None
    if isinstance(data, dict):
        if scheduler is not None:
            data["scheduler"] = scheduler
        if loops_dir is not None:
            data["loops_dir"] = str(Path(loops_dir).absolute())
        if templates_dir is not None:
            data["templates_dir"] = str(Path(templates_dir).absolute())
    return parse_spec(data, p)
