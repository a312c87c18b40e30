"""The agent's answers as typed values: inventories, one path's stat, hashes; and the relative-path
rule every request and answer obeys.

Nothing the agent sends is trusted: a remote is another machine, so every field is checked for
its type and range here and a wrong one is a TransferError naming the field, never a traceback.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from usrbatch.errors import TransferError

SHA256_RE = re.compile(r"[0-9a-f]{64}")
MAX_INT = 1 << 63  # sizes, mtimes and counts beyond this are not from a real file system


def validate_relpath(raw: str, *, what: str = "path") -> str:
    """Return a safe POSIX relative path or raise TransferError: no absolute paths, no `..`/`.`,
    no empty components, no NUL or newline, no backslashes."""
    if not isinstance(raw, str):
        raise TransferError(f"{what} is not a text path: {raw!r:.80}.")
    text = raw[2:] if raw.startswith("./") else raw
    bad = (
        not text
        or text.startswith("/")
        or "\x00" in text
        or "\n" in text
        or "\r" in text
        or "\\" in text
        or any(part in ("", ".", "..") for part in text.split("/"))
    )
    if bad:
        raise TransferError(f"{what} contains unsafe relative path {raw!r}.")
    return text  # no empty, `.` or `..` part and no leading `/`: already PurePosixPath's form


def malformed(what: str, detail: str) -> TransferError:
    """The error for an answer that does not have the agent's shape."""
    return TransferError(
        f"The agent's {what} answer is malformed: {detail}.",
        hint="The remote sent something the usrbatch agent never sends; nothing was changed from it. "
        "Check the remote's python3 and shell profile (`usr remotes doctor`).",
    )


def _int(value: Any, what: str, name: str, *, signed: bool = False) -> int:
    low = -MAX_INT if signed else 0
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value < MAX_INT:
        raise malformed(what, f"{name} is not {'an' if signed else 'a non-negative'} integer ({value!r:.40})")
    return value


def _opt_int(value: Any, what: str, name: str) -> int | None:
    return None if value is None else _int(value, what, name)


def _sha(value: Any, what: str, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not SHA256_RE.fullmatch(value):
        raise malformed(what, f"{name} is not a sha256 ({value!r:.80})")
    return value


def _shape(value: Any, what: str) -> tuple[int, int] | None:
    if value is None:
        return None
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise malformed(what, f"the parquet shape is not [rows, cols] ({value!r:.80})")
    return (_int(value[0], what, "rows"), _int(value[1], what, "cols"))


def _mapping(value: Any, what: str, name: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise malformed(what, f"{name} is not an object ({type(value).__name__})")
    return value


def _list(value: Any, what: str, name: str) -> list | tuple:
    if not isinstance(value, list | tuple):
        raise malformed(what, f"{name} is not a list ({type(value).__name__})")
    return value


def _triple(value: Any, what: str, rel: str) -> tuple[int, int, str | None]:
    """[size, mtime_ns, sha256|null], as every file entry of the agent."""
    if not isinstance(value, list | tuple) or len(value) != 3:
        raise malformed(what, f"the entry of {rel!r:.200} is not [size, mtime_ns, sha256]")
    return (
        _int(value[0], what, f"the size of {rel!r:.200}"),
        _int(value[1], what, f"the mtime of {rel!r:.200}", signed=True),
        _sha(value[2], what, f"the sha256 of {rel!r:.200}"),
    )


@dataclass(frozen=True)
class FileEntry:
    """One regular file of an inventory."""

    path: str  # POSIX path relative to the dataset dir
    size: int
    mtime_ns: int
    sha256: str | None


@dataclass(frozen=True)
class Inventory:
    """Every regular file of one dataset dir, from ONE call (one remote round trip)."""

    exists: bool
    files: dict[str, FileEntry] = field(default_factory=dict)
    rejected: tuple[tuple[str, str], ...] = ()  # (relpath, "symlink" | "special" | ...)
    events_lines: int | None = None  # line count of .events.log when present
    primary_shape: tuple[int, int] | None = None  # (rows, cols) of records.parquet, when asked
    hashed_bytes: int = 0  # bytes actually hashed (0 when every hash came from the cache)
    temps: dict[str, int] = field(default_factory=dict)  # upload temps left in the dir: {rel: size}

    @classmethod
    def from_agent(cls, data: Any) -> Inventory:
        """Build from the agent's `inventory` answer, checking every field and path it names
        (TransferError on anything the agent would not send)."""
        what = "inventory"
        data = _mapping(data, what, "the inventory")
        files = {}
        for rel, entry in _mapping(data.get("files", {}), what, "files").items():
            safe = validate_relpath(rel, what="remote inventory")
            files[safe] = FileEntry(safe, *_triple(entry, what, safe))
        rejected = []
        for item in _list(data.get("rejected", []), what, "rejected"):
            if (
                not isinstance(item, list | tuple)
                or len(item) != 2
                or not all(isinstance(x, str) for x in item)
            ):
                raise malformed(what, f"a rejected entry is not [path, reason] ({item!r:.80})")
            rejected.append((item[0], item[1]))
        temps = {}
        for item in _list(data.get("temps", []), what, "temps"):
            if not isinstance(item, list | tuple) or len(item) != 2:
                raise malformed(what, f"a temp entry is not [path, size] ({item!r:.80})")
            temps[validate_relpath(item[0], what="remote temp")] = _int(item[1], what, "a temp size")
        return cls(
            exists=data.get("exists") is True,
            files=files,
            rejected=tuple(rejected),
            events_lines=_opt_int(data.get("events_lines"), what, "events_lines"),
            primary_shape=_shape(data.get("primary_shape"), what),
            hashed_bytes=_int(data.get("hashed_bytes", 0), what, "hashed_bytes"),
            temps=temps,
        )


FileKind = Literal["file", "missing", "symlink", "directory", "special"]
FILE_KINDS = ("file", "missing", "symlink", "directory", "special")


@dataclass(frozen=True)
class FileStat:
    """One path as `stat_file` found it (FILE mode). Numbers are None unless kind is "file";
    `sha256` only when hashes were asked for, `shape` (rows, cols) only with parquet_stats and a
    readable parquet footer."""

    kind: FileKind
    size: int | None = None
    mtime_ns: int | None = None
    sha256: str | None = None
    shape: tuple[int, int] | None = None
    hashed_bytes: int = 0

    @property
    def exists(self) -> bool:
        return self.kind != "missing"

    @classmethod
    def from_agent(cls, data: Any) -> FileStat:
        """Build from the agent's `stat` answer, refusing a kind it does not know."""
        what = "stat"
        data = _mapping(data, what, "the stat")
        kind = data.get("kind")
        if kind not in FILE_KINDS:
            raise TransferError(f"remote stat returned an unknown file kind {kind!r:.80}.")
        return cls(
            kind=kind,
            size=_opt_int(data.get("size"), what, "size"),
            mtime_ns=None
            if data.get("mtime_ns") is None
            else _int(data["mtime_ns"], what, "mtime_ns", signed=True),
            sha256=_sha(data.get("sha256"), what, "sha256"),
            shape=_shape(data.get("shape"), what),
            hashed_bytes=_int(data.get("hashed_bytes", 0), what, "hashed_bytes"),
        )


def hashes_from_agent(data: Any, rels: list[str]) -> dict[str, tuple[int, int, str | None] | None]:
    """The agent's `hash` answer for `rels`: (size, mtime_ns, sha256) per path, None for a path
    that is not a regular file (or that the answer leaves out)."""
    files = _mapping(_mapping(data, "hash", "the hash answer").get("files"), "hash", "files")
    return {rel: (_triple(files[rel], "hash", rel) if files.get(rel) is not None else None) for rel in rels}
