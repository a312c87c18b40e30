"""Job templates: Jinja2 with StrictUndefined over templates/ (a checkout) or usrbatch/_templates (a wheel).

A user template directory, when given, is searched first, so one file (say `qsub/densegen.j2`) can
be replaced without copying the rest. Values are shell-quoted with the `shquote` filter; values
that go into `#$`/`#SBATCH` directive lines pass the `directive` filter, which refuses whitespace.

Secrets never go into a job script (`render_script`): a step `command` holding a token-shaped value
(usrbatch/redaction.py) is written to `<key>.secret.sh` next to the script, mode 0600 whatever the
umask, and the script sources it (`. <file>`, same shell, same `set -e`), with a redacted copy of the
command as a comment. Sourcing keeps the command's exact text and quoting, so the job runs with the
real value; exporting it from the submitting environment instead would put it in the scheduler's
job record (`qstat -j` shows `-v` variables to other users). The script itself is group-readable as
the umask allows and never world-readable (`write_private`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from usrbatch.errors import JobError
from usrbatch.redaction import has_secret, redact_text

SECRET_SUFFIX = ".secret.sh"


@dataclass(frozen=True)
class JobScript:
    """A rendered job: `text` (the script, never a secret) and, when the step's command holds a
    secret, `secret_text` for `secret_path` (mode 0600), which the script sources."""

    text: str
    secret_text: str | None = None
    secret_path: Path | None = None


STEP_KINDS = ("densegen", "sync", "infer", "shell")
TEMPLATE_DIRS = {"sge": "qsub", "slurm": "slurm", "local": "_common"}


def builtin_templates_dir() -> Path:
    """The shipped templates: `usrbatch/_templates` in a wheel, else `templates/` at the repo root."""
    package_dir = Path(__file__).resolve().parent.parent
    for candidate in (package_dir / "_templates", package_dir.parent / "templates"):
        if (candidate / "_common" / "job.j2").is_file():
            return candidate
    raise JobError(
        f"usrbatch templates not found (looked in {package_dir / '_templates'} and {package_dir.parent / 'templates'})",
        hint="Reinstall usrbatch, or pass --templates-dir pointing at a copy of the templates/ directory.",
    )


def shquote(value: Any) -> str:
    """Quote one value for bash (None is refused: it would render as the word 'None')."""
    if value is None:
        raise JobError("a template value passed to shquote is None (a required setting is missing)")
    return shlex.quote(str(value))


def directive(value: Any) -> str:
    """A value for a `#$` / `#SBATCH` line: schedulers split those on whitespace, so refuse it."""
    text = str(value)
    if not text or any(ch.isspace() for ch in text):
        raise JobError(
            f"value {text!r} cannot go into a scheduler directive line (empty or contains whitespace)",
            hint="Use paths, names and resource values without spaces for scheduler jobs.",
        )
    return text


def template_name(scheduler: str, kind: str) -> str:
    """The template file (relative to a templates dir) for a step kind on a scheduler."""
    if scheduler not in TEMPLATE_DIRS:
        raise JobError(f"unknown scheduler '{scheduler}' (expected {', '.join(TEMPLATE_DIRS)})")
    if kind not in STEP_KINDS:
        raise JobError(f"unknown step kind '{kind}' (expected {', '.join(STEP_KINDS)})")
    return f"{TEMPLATE_DIRS[scheduler]}/{kind}.j2"


def make_environment(user_dir: Path | None = None) -> jinja2.Environment:
    """A Jinja2 environment: user dir first (if any), then the shipped templates; StrictUndefined."""
    search = []
    if user_dir is not None:
        if not Path(user_dir).is_dir():
            raise JobError(f"templates directory not found: {user_dir}")
        search.append(str(user_dir))
    search.append(str(builtin_templates_dir()))
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(search),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["shquote"] = shquote
    env.filters["directive"] = directive
    return env


@functools.lru_cache(maxsize=8)
def _shared_environment(user_dir: Path | None) -> jinja2.Environment:
    """One environment per templates dir for the process: its template cache compiles each file
    once (a 40-job loop compiled 200 templates, ~3 s of a submit), and jinja's auto_reload still
    re-reads a template whose file changed."""
    return make_environment(user_dir)


def render(scheduler: str, kind: str, context: dict[str, Any], *, templates_dir: Path | None = None) -> str:
    """Render the job script for `kind` on `scheduler`; a missing variable is a JobError naming it."""
    name = template_name(scheduler, kind)
    if templates_dir is not None and not Path(templates_dir).is_dir():
        raise JobError(f"templates directory not found: {templates_dir}")
    env = _shared_environment(Path(templates_dir).absolute() if templates_dir is not None else None)
    try:
        return env.get_template(name).render(**context)
    except jinja2.UndefinedError as exc:
        raise JobError(f"template {name}: missing variable: {exc.message}") from exc
    except jinja2.TemplateNotFound as exc:
        raise JobError(f"template not found: {exc.name} (searched {env.loader.searchpath})") from exc  # type: ignore[union-attr]
    except jinja2.TemplateSyntaxError as exc:
        raise JobError(f"template {exc.filename or name}:{exc.lineno}: syntax error: {exc.message}") from exc


def secret_path_for(script: Path | str) -> Path:
    """`scripts/<key>.sh` -> `scripts/<key>.secret.sh`."""
    path = Path(script)
    return path.with_name(path.name.removesuffix(".sh") + SECRET_SUFFIX)


def _sourcing_stub(command: str, secret_file: Path) -> str:
    shown = "\n".join(f"#   {line}" for line in redact_text(command).splitlines())
    return (
        f"# This step's command holds a secret, so it is kept in {secret_file.name} (mode 0600) and not here:\n"
        f"{shown}\n"
        f". {shlex.quote(str(secret_file))}"
    )


def render_script(
    scheduler: str, kind: str, context: dict[str, Any], *, templates_dir: Path | None = None
) -> JobScript:
    """`render`, with a secret-holding `args.command` moved out of the script (see module doc).
    JobError when a secret-looking value would still land in the script (from another field)."""
    command = (context.get("args") or {}).get("command")
    if isinstance(command, str) and has_secret(command):
        secret_file = secret_path_for(context["job"]["script"])
        public = dict(context, args={**context["args"], "command": _sourcing_stub(command, secret_file)})
        script = JobScript(
            render(scheduler, kind, public, templates_dir=templates_dir), command + "\n", secret_file
        )
    else:
        script = JobScript(render(scheduler, kind, context, templates_dir=templates_dir))
    if has_secret(script.text):
        raise JobError(
            f"the {kind} job script for step '{context['job']['step']}' would contain a secret-looking value "
            "outside the step's command (a path, a setting or your template)",
            hint="Pass secrets through the step's `command:` (kept in a 0600 file) or your environment, "
            "never in paths or templates.",
        )
    return script


def write_private(path: Path, text: str, mode: int) -> None:
    """Write `text` to `path` with `mode` minus the umask, owner bits exactly as `mode` says and
    never a bit for others (`mode=0o600`: owner read/write only, whatever the umask)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    with os.fdopen(os.open(path, flags, mode & 0o770), "w", encoding="utf-8") as fh:
        current = os.fstat(fh.fileno()).st_mode & 0o777
        os.fchmod(fh.fileno(), (current & mode & 0o070) | (mode & 0o700))
        fh.write(text)


def write_job_script(path: Path, script: JobScript) -> None:
    """The script (0770 minus the umask, never others) and its secret file (0600), or no stale
    secret file when the command no longer holds one."""
    if script.secret_text is not None and script.secret_path is not None:
        write_private(script.secret_path, script.secret_text, 0o600)
    else:
        with contextlib.suppress(FileNotFoundError):
            secret_path_for(path).unlink()
    write_private(path, script.text, 0o770)
