"""Validate audit-log lines against the tables in docs/audit-log.md (the documented schema)."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "audit-log.md"
TYPES = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "string": lambda v: isinstance(v, str),
    "list": lambda v: isinstance(v, list),
    "null": lambda v: v is None,
    "bool": lambda v: isinstance(v, bool),
}


def _rows(section: str) -> list[list[str]]:
    text = DOC.read_text(encoding="utf-8")
    body = text.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in body.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            cells = re.split(r"(?<!\\)\|", line.strip().strip("|"))
            rows.append([c.strip().replace("\\|", "|") for c in cells])
    return rows[1:]  # drop the header


def _type_check(type_text: str):
    head = type_text.split(",")[0].split(" ")[0].split(":")[0]
    names = [t.strip() for t in head.split("|")]
    checks = [TYPES[n] for n in names if n in TYPES]
    if "list of" in type_text:
        checks = [TYPES["list"]]
    if "null" in type_text:
        checks.append(TYPES["null"])
    return lambda v: any(c(v) for c in checks) if checks else True


def common_fields() -> dict:
    """field -> type check, from the 'Fields on every line' table."""
    return {row[0].strip("`"): _type_check(row[1]) for row in _rows("Fields on every line")}


def event_fields() -> dict[str, dict]:
    """event -> {field -> type check}, from the 'Events' table (`name` (type, ...) items)."""
    out: dict[str, dict] = {}
    for row in _rows("Events"):
        event = row[0].strip("`")
        fields = {}
        for match in re.finditer(r"`([a-z_]+)` \(([^)]*)\)", row[2]):
            fields[match.group(1)] = _type_check(match.group(2))
        out[event] = fields
    return out


def validate_line(obj: dict) -> list[str]:
    """Problems of one parsed line (empty when it matches the documented schema)."""
    problems = []
    for field, check in common_fields().items():
        if field not in obj:
            problems.append(f"{obj.get('event')}: missing common field {field}")
        elif not check(obj[field]):
            problems.append(f"{obj.get('event')}: {field}={obj[field]!r} has the wrong type")
    events = event_fields()
    event = obj.get("event")
    if event not in events:
        problems.append(f"undocumented event {event!r} (document it in docs/audit-log.md)")
        return problems
    for field, check in events[event].items():
        if field not in obj:
            problems.append(f"{event}: missing field {field}")
        elif not check(obj[field]):
            problems.append(f"{event}: {field}={obj[field]!r} has the wrong type")
    return problems
