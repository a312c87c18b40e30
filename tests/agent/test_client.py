"""The agent's client: the stdin it encodes (run by a real python3 through the real bootstrap), the
remote compiled-code cache and its checks, answers from a hostile remote, and the error mapping."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest

from usrbatch.agent import client, loader
from usrbatch.agent.answers import FileStat, Inventory, hashes_from_agent
from usrbatch.errors import TransferError, VerificationError
from usrbatch.remotes import RemoteConfig
from usrbatch.transport.ssh import SshTransport

AGENT_DIR = Path(client.__file__).parent
SHA = "ab" * 32


def _run(stdin: bytes, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-c", client.BOOTSTRAP], input=stdin, capture_output=True, timeout=60, env=env
    )


def _code_files() -> list[Path]:
    return sorted(Path(loader.cache_dir()).glob("*.code"))


def test_encode_carries_loader_source_hash_and_request() -> None:
    request = {"op": "probe", "base": "/x y"}
    data = client.encode(request)
    size, rest = data.split(b"\n", 1)
    assert zlib.decompress(rest[: int(size)]) == (AGENT_DIR / "loader.py").read_bytes()
    head, rest = rest[int(size) :].split(b"\n", 1)
    sha, n = head.split()
    source = (AGENT_DIR / "remote.py").read_bytes()
    assert sha.decode() == hashlib.sha256(source).hexdigest() == client.shipment().source_sha256
    assert zlib.decompress(rest[: int(n)]) == source
    assert json.loads(rest[int(n) :]) == request
    without = client.encode(request, with_source=False)
    assert len(without) < len(data) // 4 and b" 0\n" in without
    assert json.loads(without.rsplit(b"\n", 2)[-2]) == request


def test_first_exec_stores_a_private_compiled_copy_and_later_execs_need_only_the_hash(tmp_path: Path) -> None:
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "a.txt").write_text("a\n")
    request = client.inventory_request(str(tmp_path), "ds", hashes=True, parquet_stats=False)
    assert _code_files() == []
    assert client.needs_source(_run(client.encode(request, with_source=False)).stdout)  # nothing cached yet
    first = client.parse_answer(_run(client.encode(request)).stdout)
    assert first is not None and first.ok
    [stored] = _code_files()
    assert stored.parent.stat().st_mode & 0o777 == 0o700 and stored.stat().st_mode & 0o777 == 0o600
    later = client.parse_answer(_run(client.encode(request, with_source=False)).stdout)
    assert later is not None and later.result["files"] == first.result["files"]
    assert Inventory.from_agent(later.result).files["a.txt"].size == 2


def test_a_damaged_or_foreign_cache_is_never_run(tmp_path: Path) -> None:
    request = client.probe_request(str(tmp_path))
    assert client.parse_answer(_run(client.encode(request)).stdout).ok  # type: ignore[union-attr]
    [stored] = _code_files()
    blob = bytearray(stored.read_bytes())
    blob[-5] ^= 0xFF  # the body no longer matches the sha256 in its header
    stored.write_bytes(bytes(blob))
    assert client.needs_source(_run(client.encode(request, with_source=False)).stdout)
    assert client.parse_answer(_run(client.encode(request)).stdout).ok  # type: ignore[union-attr]
    assert loader.load(str(stored)) is not None  # rewritten from the verified source
    cache = Path(loader.cache_dir())
    cache.chmod(0o755)  # others may enter: the cache is not used (nor repaired)
    assert client.needs_source(_run(client.encode(request, with_source=False)).stdout)
    cache.chmod(0o700)
    assert client.parse_answer(_run(client.encode(request, with_source=False)).stdout).ok  # type: ignore[union-attr]
    elsewhere = tmp_path / "elsewhere"
    cache.rename(elsewhere)
    cache.symlink_to(elsewhere)  # a symlinked cache dir is not ours to trust
    assert client.needs_source(_run(client.encode(request, with_source=False)).stdout)


def test_source_damaged_in_transit_is_refused_not_run(tmp_path: Path) -> None:
    ship = client.shipment()
    evil = zlib.compress(f"open({str(tmp_path / 'pwned')!r}, 'w')\n".encode())
    request = json.dumps(client.probe_request(str(tmp_path))).encode()
    data = b"%d\n" % len(ship.loader) + ship.loader + f"{ship.source_sha256} {len(evil)}\n".encode()
    answer = client.parse_answer(_run(data + evil + request + b"\n").stdout)
    assert answer is not None and not answer.ok
    with pytest.raises(TransferError, match="damaged in transit"):
        client.result_of(answer, what="probe", target="h", label="h:/b")
    assert _code_files() == [] and not (tmp_path / "pwned").exists()


# ---------------------------------------------------------------------------------------------
# Answers from a hostile remote: a clear TransferError, never a traceback.


def _good_inventory() -> dict[str, Any]:
    return {
        "exists": True,
        "files": {"a.txt": [2, 1_700_000_000_000_000_000, "0" * 64]},
        "rejected": [["l", "symlink"]],
        "events_lines": 3,
        "primary_shape": [4, 5],
        "hashed_bytes": 2,
        "temps": [[".usrbatch-tmp-x", 1]],
    }


def test_a_well_formed_inventory_reads_into_typed_values() -> None:
    inv = Inventory.from_agent(_good_inventory())
    assert inv.files["a.txt"].size == 2 and inv.primary_shape == (4, 5)
    assert inv.rejected == (("l", "symlink"),) and inv.temps == {".usrbatch-tmp-x": 1}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (None, "not a dict", "the inventory is not an object"),
        ("files", ["a.txt"], "files is not an object"),
        ("files", {"a.txt": [1, 2]}, r"entry of 'a.txt' is not \[size, mtime_ns, sha256\]"),
        ("files", {"a.txt": ["2", 1, None]}, "the size of 'a.txt' is not a non-negative integer"),
        ("files", {"a.txt": [-1, 1, None]}, "the size of 'a.txt' is not a non-negative integer"),
        ("files", {"a.txt": [10**40, 1, None]}, "the size of 'a.txt' is not a non-negative integer"),
        ("files", {"a.txt": [True, 1, None]}, "the size of 'a.txt' is not a non-negative integer"),
        ("files", {"a.txt": [1, 1.5, None]}, "the mtime of 'a.txt' is not an integer"),
        ("files", {"a.txt": [1, 1, "zz"]}, "the sha256 of 'a.txt' is not a sha256"),
        ("files", {"../etc/passwd": [1, 1, None]}, "unsafe relative path"),
        ("files", {"a" * 10_000: [1, 1, None], "/abs": [1, 1, None]}, "unsafe relative path"),
        ("rejected", "x", "rejected is not a list"),
        ("rejected", [["only-one"]], r"rejected entry is not \[path, reason\]"),
        ("temps", [["../t", 1]], "unsafe relative path"),
        ("temps", [[".usrbatch-tmp-x", "big"]], "a temp size is not a non-negative integer"),
        ("events_lines", "3", "events_lines is not a non-negative integer"),
        ("primary_shape", [1], r"the parquet shape is not \[rows, cols\]"),
        ("primary_shape", [1, None], "cols is not a non-negative integer"),
        ("hashed_bytes", None, "hashed_bytes is not a non-negative integer"),
    ],
)
def test_a_malformed_inventory_is_a_transfer_error(field: str | None, value: Any, message: str) -> None:
    data: Any = value if field is None else {**_good_inventory(), field: value}
    with pytest.raises(TransferError, match=message):
        Inventory.from_agent(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "the stat is not an object"),
        ({"kind": "socket"}, "unknown file kind"),
        ({"kind": "file", "size": "1"}, "size is not a non-negative integer"),
        ({"kind": "file", "size": 1, "sha256": 5}, "sha256 is not a sha256"),
        ({"kind": "file", "shape": {"rows": 1}}, "parquet shape"),
    ],
)
def test_a_malformed_stat_is_a_transfer_error(data: Any, message: str) -> None:
    with pytest.raises(TransferError, match=message):
        FileStat.from_agent(data)


def test_hash_answers_are_checked_and_missing_paths_are_none() -> None:
    good = {"files": {"a": [1, 2, "f" * 64], "b": None}}
    assert hashes_from_agent(good, ["a", "b", "c"]) == {"a": (1, 2, "f" * 64), "b": None, "c": None}
    for bad in ([], {"files": []}, {"files": {"a": "x"}}):
        with pytest.raises(TransferError, match="malformed"):
            hashes_from_agent(bad, ["a"])


def test_parse_answer_finds_the_agent_line_among_noise_and_ignores_the_rest() -> None:
    assert client.parse_answer(b"") is None
    assert client.parse_answer(b"motd\n{not json\n[1, 2]\n") is None
    assert client.parse_answer(b'{"ok": "yes", "result": 1}\n') is None  # ok must be a boolean
    assert client.parse_answer(b"[" * 100_000 + b"\n") is None
    assert client.parse_answer(b"{" + b'"a":' * 50_000 + b"1}\n") is None  # too deep for json
    out = b'motd\n{"ok": true, "result": {"x": 1}, "python": "/usr/bin/python3"}\nbye\n'
    answer = client.parse_answer(out)
    assert answer is not None and answer.result == {"x": 1} and answer.python == "/usr/bin/python3"
    odd = client.parse_answer(b'{"ok": false, "error": {"nested": 1}, "python": "rel/py\\n", "kind": "evil"}')
    assert odd is not None and odd.error == "{'nested': 1}" and odd.python is None and odd.kind is None
    long = client.parse_answer(json.dumps({"ok": False, "error": "x" * 100_000}).encode())
    assert long is not None and len(long.error) == client.MAX_ERROR


def test_refusals_map_to_usrbatch_errors() -> None:
    def refuse(**fields: Any) -> None:
        answer = client.Answer.from_json({"ok": False, **fields})
        assert answer is not None
        client.result_of(answer, what="apply", target="u@h", label="u@h:/b")

    with pytest.raises(
        VerificationError, match=r"^Remote apply on u@h:/b refused: uploaded x does not match\.$"
    ):
        refuse(kind="verification", error="uploaded x does not match")
    with pytest.raises(VerificationError, match=r"^post-push-payload: bad \(u@h:/b\)$") as info:
        refuse(kind="payload", error="post-push-payload: bad", hint="re-run")
    assert info.value.hint == "re-run"
    with pytest.raises(TransferError, match=r"^Remote apply on u@h refused: AgentError: no$"):
        refuse(error="AgentError: no")


def test_run_local_is_the_same_request_and_error_path(tmp_path: Path) -> None:
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "f").write_bytes(b"abc")
    inv = client.run_local(
        client.inventory_request(str(tmp_path), "ds", hashes=True, parquet_stats=False), label="local:x"
    )
    assert Inventory.from_agent(inv).files["f"].sha256 == hashlib.sha256(b"abc").hexdigest()
    (tmp_path / "out").symlink_to("/etc")
    with pytest.raises(
        TransferError, match=r"^Remote stat on local:x refused: AgentError: .*escapes base_dir"
    ):
        client.run_local(
            client.stat_request(str(tmp_path), "out/passwd", hashes=False, parquet_stats=False),
            label="local:x",
        )
    with pytest.raises(TransferError, match="contains unsafe relative path"):
        client.inventory_request(str(tmp_path), "../up", hashes=True, parquet_stats=False)


# ---------------------------------------------------------------------------------------------
# The ssh transport's agent plumbing against scripted remote output (no network).


class ScriptedRemote(SshTransport):
    """An SshTransport whose execs answer from a script (what a hostile or odd remote prints)."""

    def __init__(self, outputs: list[bytes]) -> None:
        self._init_state(
            RemoteConfig(name="h", type="ssh", host="h", base_dir="/b"),
            connect_timeout=1,
            retries=1,
            backoff=0,
            workers=1,
            window_size=1 << 20,
            force_sh=False,
        )
        self.outputs = outputs
        self.sent: list[bytes] = []

    label = "h:/b"  # type: ignore[assignment]
    target = "h"  # type: ignore[assignment]

    def connect(self) -> Any:
        return None

    def _exec(
        self, command: str, stdin: bytes = b"", *, timeout: float | None = None
    ) -> tuple[int, bytes, bytes]:
        self.sent.append(stdin)
        return 0, self.outputs.pop(0), b""


def _ok(result: Any) -> bytes:
    return json.dumps({"ok": True, "result": result}).encode() + b"\n"


def test_source_is_sent_first_then_only_its_hash_and_again_when_asked() -> None:
    full = len(client.encode({"op": "probe", "base": "/b"}))
    t = ScriptedRemote([_ok({}), _ok({}), f"{loader.NEED_SOURCE}\n".encode(), _ok({}), _ok({})])
    for _ in range(4):
        assert t.probe() == {}
    assert [len(s) >= full for s in t.sent] == [True, False, False, True, True]


@pytest.mark.parametrize(
    "out",
    [
        b"",
        b"\x00\xff garbage\n",
        b'{"ok": true}\n',  # no result
        _ok([1, 2]),
        _ok({"exists": True, "files": {"a": [1, 2]}}),
        _ok({"exists": True, "files": {"../../x": [1, 2, None]}}),
        json.dumps({"ok": True, "result": {"files": {"a": [10**30, 0, None]}}}).encode(),
    ],
)
def test_inventory_from_a_hostile_remote_is_a_transfer_error(out: bytes) -> None:
    with pytest.raises(TransferError):
        ScriptedRemote([out]).inventory("ds")


def test_apply_and_stat_from_a_hostile_remote_are_transfer_errors() -> None:
    with pytest.raises(TransferError, match="answered without its inventory"):
        ScriptedRemote([_ok("done")]).apply([("a", "b")], [], inventory="ds")
    with pytest.raises(TransferError, match="inventory is not an object"):
        ScriptedRemote([_ok({"inventory": 7})]).apply([("a", "b")], [], inventory="ds")
    with pytest.raises(TransferError, match="unknown file kind"):
        ScriptedRemote([_ok({"kind": ["file"]})]).stat_file("f")
    with pytest.raises(TransferError, match="answered without its findings"):
        ScriptedRemote([_ok(None)]).probe()
    with pytest.raises(TransferError, match="malformed"):
        ScriptedRemote([_ok({"files": "x"})]).remote_hashes(["a"])


def test_loader_name_depends_on_source_and_interpreter() -> None:
    name = loader.code_name(SHA)
    assert name.startswith(SHA) and sys.implementation.cache_tag in name and name.endswith(".code")
    assert os.path.basename(loader.cache_dir()) == "agent-code"


def test_the_agent_knows_the_same_reserved_names_as_the_dataset_layout() -> None:
    """remote.py cannot import usrbatch: its copies of the layout's names are pinned here."""
    from usrbatch.agent import remote
    from usrbatch.dataset import layout

    assert set(remote.RUNTIME_TOP) == set(layout.RUNTIME_NAMES)
    assert (remote.LEASE_PREFIX, remote.TEMP_PREFIX) == (layout.LEASE_PREFIX, layout.TEMP_PREFIX)
    assert (remote.DATASET_LOCK, remote.EVENTS_LOCK) == (layout.DATASET_LOCK, layout.EVENTS_LOCK)
    for rel in [".usr.lock", ".usr.lease.x", "a/.usrbatch-tmp-1", "records.parquet", "_derived/x.parquet"]:
        assert remote.is_runtime(rel) == layout.is_runtime(rel), rel
