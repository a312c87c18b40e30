"""Job templates: Jinja2 with StrictUndefined over templates/ (a checkout) or usrbatch/_templates (a wheel).

A user template directory, when given, is searched first, so one file (say `qsub/densegen.j2`) can
be replaced without copying the rest. Values are shell-quoted with the `shquote` filter; values
that go into `#$`/`#SBATCH` directive lines pass the `directive` filter, which refuses whitespace.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import jinja2

from usrbatch.errors import JobError

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


def render(scheduler: str, kind: str, context: dict[str, Any], *, templates_dir: Path | None = None) -> str:
    """Render the job script for `kind` on `scheduler`; a missing variable is a JobError naming it."""
    name = template_name(scheduler, kind)
    env = make_environment(templates_dir)
    try:
        return env.get_template(name).render(**context)
    except jinja2.UndefinedError as exc:
        raise JobError(f"template {name}: missing variable: {exc.message}") from exc
    except jinja2.TemplateNotFound as exc:
        raise JobError(f"template not found: {exc.name} (searched {env.loader.searchpath})") from exc  # type: ignore[union-attr]
    except jinja2.TemplateSyntaxError as exc:
        raise JobError(f"template {exc.filename or name}:{exc.lineno}: syntax error: {exc.message}") from exc
