"""Read the commands a runbook tells people to type: fenced ```bash blocks and inline `uv run` spans.

A *command* is one logical shell line: comment lines and blank lines are dropped, lines ending with
a backslash are joined with the next one (the text keeps the backslash-newline, so it runs exactly
as written). Headings are tracked so a test can say where a command came from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$")
INLINE_UV = re.compile(r"`(uv run [^`]+)`")


@dataclass(frozen=True)
class Command:
    """One command as written in a document."""

    text: str  # exactly as in the doc (continuations kept)
    source: str  # file name
    line: int  # 1-based line of its first line
    heading: str  # nearest heading above it
    comment: str  # the `# ...` comment line(s) right above it, joined (may be "")
    inline: bool = False  # from an inline `uv run ...` span rather than a fenced block

    @property
    def key(self) -> str:
        """Whitespace-normalized text (continuations folded): the key of a mapping table."""
        return normalize(self.text)

    def where(self) -> str:
        return f"{self.source}:{self.line} [{self.heading}]"


def normalize(text: str) -> str:
    return " ".join(text.replace("\\\n", " ").split())


def _commands_of_block(lines: list[tuple[int, str]], source: str, heading: str) -> list[Command]:
    out: list[Command] = []
    comments: list[str] = []
    pending: list[str] = []
    start = 0
    for lineno, raw in lines:
        stripped = raw.strip()
        if not pending:
            if not stripped:
                comments = []
                continue
            if stripped.startswith("#"):
                comments.append(stripped.lstrip("#").strip())
                continue
            start = lineno
        pending.append(raw.rstrip())
        if raw.rstrip().endswith("\\"):
            continue
        out.append(Command("\n".join(pending), source, start, heading, " ".join(comments)))
        pending, comments = [], []
    if pending:
        raise ValueError(f"{source}:{start}: command ends with a dangling backslash")
    return out


def bash_commands(path: Path) -> list[Command]:
    """Every command of every ```bash block of `path`, in document order."""
    commands: list[Command] = []
    heading = ""
    block: list[tuple[int, str]] | None = None
    lang = ""
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fence = FENCE.match(raw)
        if block is None:
            if fence:
                block, lang = [], fence.group(2)
                continue
            match = HEADING.match(raw)
            if match:
                heading = match.group(2)
            continue
        if fence and not fence.group(2):
            if lang == "bash":
                commands.extend(_commands_of_block(block, path.name, heading))
            block = None
            continue
        block.append((lineno, raw))
    if block is not None:
        raise ValueError(f"{path}: unterminated code fence")
    return commands


def inline_uv_commands(path: Path) -> list[Command]:
    """Inline `uv run ...` spans outside fences (e.g. a numbered loop), in document order."""
    commands: list[Command] = []
    heading = ""
    in_fence = False
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if FENCE.match(raw):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        match = HEADING.match(raw)
        if match:
            heading = match.group(2)
            continue
        for span in INLINE_UV.findall(raw):
            commands.append(Command(span, path.name, lineno, heading, raw.strip(), inline=True))
    return commands
