"""The one client of the agent: build a request, encode what a remote `python3` reads on stdin, run
a request in-process (local directories), and turn an answer into a result or a usrbatch error.

Every transport (ssh, openssh, local) and the local inventory go through here, so a request has one
shape and an answer one reading. What this module does not do is run a remote command: the ssh
transports own the exec (transport/ssh.py) and its sh fallback (transport/ssh_shell.py).

Shipping (docs/benchmarks.md, "Agent shipping"): the bootstrap one-liner reads the small loader
(loader.py, zlib-compressed) from stdin; the loader runs the agent from a sha256-checked compiled
copy in a private cache on the remote, else from the zlib-compressed source sent after it. A caller
sends the source on its first exec and whenever the remote asked for it (`needs_source`), and only
the source's hash otherwise.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from usrbatch.agent import remote
from usrbatch.agent.answers import Inventory, validate_relpath
from usrbatch.agent.loader import NEED_SOURCE
from usrbatch.errors import TransferError, VerificationError

AGENT_VERSION = remote.AGENT_VERSION
OPS = (*remote.OPS, "lease", "recv", "send")  # every op the agent answers (the last three stream)
BOOTSTRAP = (
    "import sys,zlib;b=sys.stdin.buffer;n=int(b.readline());s=zlib.decompress(b.read(n));"
    'exec(compile(s,"usrbatch_agent_loader","exec"),{"__name__":"__main__"})'
)
MAX_ERROR = 2000  # characters of an agent's error text kept in a message


@dataclass(frozen=True)
class Shipment:
    """The agent as sent: the compressed loader, the source's sha256 and the compressed source."""

    loader: bytes
    source_sha256: str
    source: bytes


@lru_cache(maxsize=1)
def shipment() -> Shipment:
    """The agent as this package ships it (read and compressed once per process)."""
    here = Path(__file__).parent  # the files themselves (importlib.resources costs ~15 ms to import)
    source = (here / "remote.py").read_bytes()
    loader = (here / "loader.py").read_bytes()
    return Shipment(
        loader=zlib.compress(loader),
        source_sha256=hashlib.sha256(source).hexdigest(),
        source=zlib.compress(source),
    )


def encode(request: Mapping[str, Any], *, with_source: bool = True) -> bytes:
    """What the bootstrap reads on stdin: the loader, the source's hash (and the source when
    `with_source`), then the one-line request."""
    ship = shipment()
    body = ship.source if with_source else b""
    line = json.dumps(request, separators=(",", ":")).encode("utf-8") + b"\n"
    return b"".join(
        [
            b"%d\n" % len(ship.loader),
            ship.loader,
            f"{ship.source_sha256} {len(body)}\n".encode("ascii"),
            body,
            line,
        ]
    )


def needs_source(out: bytes) -> bool:
    """The remote ran nothing: its cache could not serve a request sent without the source."""
    return NEED_SOURCE.encode("ascii") in out and b'"ok"' not in out


# ---------------------------------------------------------------------------------------------
# Requests: every path validated here, so no transport can send an unsafe one.


def inventory_request(base: str, rel: str, *, hashes: bool, parquet_stats: bool) -> dict[str, Any]:
    rel = validate_relpath(rel, what="dataset dir")
    return {"op": "inventory", "base": base, "rel": rel, "hashes": hashes, "parquet_stats": parquet_stats}


def hash_request(base: str, paths: Sequence[str]) -> dict[str, Any]:
    return {"op": "hash", "base": base, "paths": [validate_relpath(p, what="hash path") for p in paths]}


def mkdir_request(base: str, paths: Sequence[str]) -> dict[str, Any]:
    rels = sorted({validate_relpath(p, what="mkdir path") for p in paths})
    return {"op": "mkdir", "base": base, "paths": rels}


def stat_request(base: str, rel: str, *, hashes: bool, parquet_stats: bool) -> dict[str, Any]:
    rel = validate_relpath(rel, what="stat path")
    return {"op": "stat", "base": base, "rel": rel, "hashes": hashes, "parquet_stats": parquet_stats}


def probe_request(base: str) -> dict[str, Any]:
    return {"op": "probe", "base": base}


def lease_request(
    base: str,
    rel: str,
    *,
    token: str,
    timeout: float,
    events: str,
    inventory: bool = False,
    parquet_stats: bool = False,
) -> dict[str, Any]:
    """The `lease` request; with `inventory` the agent inventories the dataset once it holds the
    lock and answers it on the line after the ACQUIRED marker."""
    rel = validate_relpath(rel, what="dataset dir")
    request: dict[str, Any] = {
        "op": "lease",
        "base": base,
        "rel": rel,
        "token": token,
        "timeout": float(timeout),
        "events": events,
    }
    if inventory:
        request["inventory"] = {"parquet_stats": parquet_stats}
    return request


def apply_request(
    base: str,
    renames: Sequence[tuple[str, str]],
    removals: Sequence[str],
    *,
    verify: Mapping[str, str] | None = None,
    mtimes: Mapping[str, int] | None = None,
    payload: Mapping[str, str] | None = None,
    snapshot: tuple[str, str] | Sequence[str] | None = None,
    inventory: str | None = None,
    parquet_stats: bool = False,
) -> dict[str, Any] | None:
    """The `apply` request, or None when it would change and report nothing."""
    ren = [
        [validate_relpath(s, what="rename source"), validate_relpath(d, what="rename target")]
        for s, d in renames
    ]
    rem = [validate_relpath(p, what="removal") for p in removals]
    ver = {validate_relpath(p, what="verify path"): str(sha) for p, sha in (verify or {}).items()}
    inv_rel = validate_relpath(inventory, what="dataset dir") if inventory is not None else None
    if not ren and not rem and not ver and inv_rel is None:
        return None
    request: dict[str, Any] = {"op": "apply", "base": base, "renames": ren, "removals": rem}
    if ver:
        request["verify"] = ver
    if mtimes:
        request["mtimes"] = dict(mtimes)
    if payload:
        request["payload"] = {validate_relpath(p, what="payload path"): str(k) for p, k in payload.items()}
    if snapshot:
        request["snapshot"] = [validate_relpath(p, what="snapshot path") for p in snapshot]
    if inv_rel is not None:
        request["inventory"] = inv_rel
        request["parquet_stats"] = parquet_stats
    return request


# ---------------------------------------------------------------------------------------------
# Answers


@dataclass(frozen=True)
class Answer:
    """One answer of the agent, its fields checked for type (the result is checked by its reader)."""

    ok: bool
    result: Any = None
    error: str = ""
    kind: str | None = None  # "verification" | "payload" when ok is False
    hint: str | None = None
    python: str | None = None  # the interpreter that answered (an absolute path), when it said

    @classmethod
    def from_json(cls, data: Any) -> Answer | None:
        """An Answer from a decoded JSON object, or None when it is not shaped like one."""
        if not isinstance(data, dict) or not isinstance(data.get("ok"), bool):
            return None
        python = data.get("python")
        if not (
            isinstance(python, str) and python.startswith("/") and "\n" not in python and len(python) < 4096
        ):
            python = None
        kind = data.get("kind")
        hint = data.get("hint")
        error = data.get("error")
        return cls(
            ok=data["ok"],
            result=data.get("result"),
            error=("" if error is None else error if isinstance(error, str) else repr(error))[:MAX_ERROR],
            kind=kind if kind in ("verification", "payload") else None,
            hint=hint[:MAX_ERROR] if isinstance(hint, str) else None,
            python=python,
        )


def parse_answer(out: bytes) -> Answer | None:
    """The agent's answer in a command's stdout: the last line that is a JSON object with a
    boolean `ok` (a login shell may print noise around it); None when there is none."""
    text = out.decode("utf-8", "replace")
    for line in reversed(text.splitlines()):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            data = json.loads(line)
        except (ValueError, RecursionError):
            continue
        found = Answer.from_json(data)
        if found is not None:
            return found
    return None


def result_of(answer: Answer, *, what: str, target: str, label: str) -> Any:
    """The result of an `ok` answer; otherwise the agent's refusal as a usrbatch error:
    VerificationError for a failed upload check or payload, TransferError for anything else."""
    if answer.ok:
        return answer.result
    if answer.kind == "payload":  # the agent's message carries its context
        raise VerificationError(f"{answer.error} ({label})", hint=answer.hint)
    if answer.kind == "verification":
        raise VerificationError(f"Remote {what} on {label} refused: {answer.error}.")
    raise TransferError(f"Remote {what} on {target} refused: {answer.error}")


def run_local(request: Mapping[str, Any], *, label: str, cache_path: str | None = None) -> Any:
    """Run one request in this process (a local directory): the same ops, answers and errors as
    over ssh, except that an unreadable file raises its PermissionError (named by the CLI as
    `Permission denied: <path>`, as every local file is). `cache_path` overrides the hash-cache
    file of an inventory/apply/stat."""
    req = dict(request)
    if cache_path is not None:
        req["cache_path"] = cache_path
    answer = Answer.from_json(remote.answer(req, raise_permission=True))
    if answer is None:  # remote.answer always returns an answer object
        raise TransferError(f"The agent gave no answer to {req.get('op')!r} on {label}.")
    return result_of(answer, what=str(req.get("op")), target=label, label=label)


def local_inventory(path: str, *, parquet_stats: bool = False) -> Inventory:
    """Inventory of a local dataset dir (absolute `path`), every file hashed, default hash cache."""
    request = {"op": "inventory", "path": path, "hashes": True, "parquet_stats": parquet_stats}
    return Inventory.from_agent(run_local(request, label=f"local:{path}"))
