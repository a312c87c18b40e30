"""Remote command lines for the ssh transport, every argument shell-quoted.

Each remote command is `sh -c '<script>' sh ARG...`: the script is a constant written here and
user data (base_dir, dataset ids, paths) only ever arrives as quoted positional arguments, so
spaces, quotes and `$(...)` in names are inert. Scripts are one line (`;`-joined) so that even a
csh login shell passes them through unchanged.

The agent is started with a tiny bootstrap (agent/client.py) that reads the agent's loader, its
source or only the source's hash, and the request line from stdin, so a request of any size never
meets ARG_MAX. When python3 is absent the same exec falls back to a POSIX sh + GNU find pipeline
(inventory and hashes only).
"""

from __future__ import annotations

import shlex
from decimal import Decimal

from usrbatch.agent.client import BOOTSTRAP
from usrbatch.dataset.layout import TEMP_PREFIX, is_runtime

NO_PYTHON_MARK = "USRBATCH-NO-PYTHON3"
SH_MARK = "USRBATCH-SH:"


def sh_command(script: str, *args: str) -> str:
    """`sh -c '<script>' sh 'arg1' ...` with every piece quoted."""
    if "\n" in script:
        raise ValueError("remote scripts must be one line")
    return " ".join(["sh", "-c", shlex.quote(script), "sh", *(shlex.quote(a) for a in args)])


def _python_or(fallback: str | None, force_sh: bool) -> str:
    # $1 = an interpreter path learned from an earlier answer (or ""), $2 = the bootstrap.
    # -S: the agent is stdlib only, and `site` (every .pth file of site-packages, sitecustomize)
    # can cost more than the agent's own work (~50 ms here with a well-filled site-packages).
    known = "false" if force_sh else '[ -n "$1" ] && [ -x "$1" ]'
    on_path = "false" if force_sh else "command -v python3 >/dev/null 2>&1"
    tail = fallback if fallback else f"echo {NO_PYTHON_MARK}; exit 127"
    return (
        f'if {known}; then exec "$1" -S -c "$2"; fi; if {on_path}; then exec python3 -S -c "$2"; fi; '
        f"shift; shift; {tail}"
    )


def agent_command(*, force_sh: bool = False, python: str = "") -> str:
    """Run the agent (the request comes on stdin) with `python` when given and executable, else
    python3 from PATH; no fallback. Reusing the interpreter path an earlier answer reported skips
    wrapper scripts (pyenv shims, module wrappers) that can cost more than the work itself."""
    return sh_command(_python_or(None, force_sh), python, BOOTSTRAP)


# After `shift`: $1 = base_dir, $2 = relative dir, $3 = 1 when hashes are wanted.
_EXPAND_BASE = 'b=$1; case $b in "~") b=$HOME;; "~/"*) b=$HOME/${b#"~/"};; esac'
_INVENTORY_SH = "; ".join(
    [
        _EXPAND_BASE,
        f'cd -- "$b/$2" 2>/dev/null || {{ echo {SH_MARK}absent; exit 0; }}',
        f"echo {SH_MARK}files",
        f"find . -mindepth 1 -name '{TEMP_PREFIX}*' -prune -o -not -type d -printf '%y %s %T@ %p\\n'",
        f"echo {SH_MARK}hashes",
        'if [ "$3" = 1 ]; then if command -v sha256sum >/dev/null 2>&1; then '
        f"find . -type f -not -name '{TEMP_PREFIX}*' -exec sha256sum {{}} +; "
        "elif command -v shasum >/dev/null 2>&1; then "
        f"find . -type f -not -name '{TEMP_PREFIX}*' -exec shasum -a 256 {{}} +; fi; fi",
        f"echo {SH_MARK}events",
        "if [ -f .events.log ]; then wc -l < .events.log; fi",
        f"echo {SH_MARK}end",
    ]
)
# After `shift`: $1 = base_dir, then relative paths.
_HASH_SH = "; ".join(
    [
        _EXPAND_BASE,
        f'cd -- "$b" || exit 3; shift; echo {SH_MARK}files',
        'for p in "$@"; do if [ -f "./$p" ] && [ ! -L "./$p" ]; then find "./$p" -maxdepth 0 -printf \'%y %s %T@ %p\\n\'; fi; done',
        f"echo {SH_MARK}hashes",
        'for p in "$@"; do if [ -f "./$p" ] && [ ! -L "./$p" ]; then '
        'if command -v sha256sum >/dev/null 2>&1; then sha256sum -- "./$p"; else shasum -a 256 -- "./$p"; fi; fi; done',
        f"echo {SH_MARK}end",
    ]
)


def inventory_command(
    base_dir: str, rel_dir: str, hashes: bool, *, force_sh: bool = False, python: str = ""
) -> str:
    """ONE exec: the python agent (request on stdin), else the sh inventory of base_dir/rel_dir."""
    return sh_command(
        _python_or(_INVENTORY_SH, force_sh), python, BOOTSTRAP, base_dir, rel_dir, "1" if hashes else "0"
    )


def hash_command(base_dir: str, paths: list[str], *, force_sh: bool = False, python: str = "") -> str:
    """ONE exec: agent `hash` op, else sha256sum/shasum of base_dir/<path> for each path."""
    return sh_command(_python_or(_HASH_SH, force_sh), python, BOOTSTRAP, base_dir, *paths)


def _sections(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    current: str | None = None
    for line in text.splitlines():
        if line.startswith(SH_MARK):
            current = line[len(SH_MARK) :]
            out.setdefault(current, [])
        elif current is not None and line:
            out[current].append(line)
    return out


def _strip_dot(path: str) -> str:
    return path[2:] if path.startswith("./") else path


def _parse_files(lines: list[str], skip_runtime: bool) -> tuple[dict[str, list], list[list[str]]]:
    files: dict[str, list] = {}
    rejected: list[list[str]] = []
    for line in lines:
        kind, size, mtime, path = line.split(" ", 3)
        rel = _strip_dot(path)
        if skip_runtime and is_runtime(rel):
            continue
        if kind == "f":
            files[rel] = [int(size), int(Decimal(mtime) * 1_000_000_000), None]
        else:
            rejected.append([rel, "symlink" if kind == "l" else "special"])
    return files, rejected


def _parse_hashes(lines: list[str]) -> dict[str, str]:
    out = {}
    for line in lines:
        sha, _, path = line.partition("  ")
        out[_strip_dot(path.lstrip("*"))] = sha.lstrip("\\")
    return out


def parse_sh_inventory(text: str, hashes: bool) -> dict:
    """The sh fallback's output → the agent's inventory dict (see agent.inventory)."""
    sec = _sections(text)
    if "end" not in sec and "absent" not in sec:
        raise ValueError("truncated sh inventory output")
    out: dict = {"exists": "absent" not in sec, "files": {}, "rejected": [], "events_lines": None}
    out.update(primary_shape=None, hashed_bytes=0)
    if not out["exists"]:
        return out
    files, rejected = _parse_files(sec.get("files", []), True)
    shas = _parse_hashes(sec.get("hashes", []))
    for rel, entry in files.items():
        if hashes:
            entry[2] = shas.get(rel)
            out["hashed_bytes"] += entry[0]
    out["files"], out["rejected"] = files, rejected
    events = sec.get("events", [])
    if events and ".events.log" in files:
        out["events_lines"] = int(events[0].strip())
    return out


def parse_sh_hashes(text: str) -> dict:
    """The sh hash fallback's output → the agent's `hash` result `{"files": {rel: [...]|None}}`."""
    sec = _sections(text)
    if "end" not in sec:
        raise ValueError("truncated sh hash output")
    files, _rejected = _parse_files(sec.get("files", []), False)
    shas = _parse_hashes(sec.get("hashes", []))
    return {"files": {rel: [e[0], e[1], shas.get(rel)] for rel, e in files.items()}}
