"""The agent's `stat` op (FILE mode) on real files, in-process, as a subprocess (the way the ssh
transport runs it) and through LocalTransport.stat_file."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from usrbatch.agent import remote as agent
from usrbatch.errors import TransferError
from usrbatch.transport.base import FileStat
from usrbatch.transport.local import LocalTransport


@pytest.fixture
def cache(tmp_path: Path) -> str:
    return str(tmp_path / "cache" / "c.json")


def test_kinds_are_reported_without_following_links(tmp_path: Path, cache: str) -> None:
    base = tmp_path / "base"
    base.mkdir()
    (base / "f.txt").write_bytes(b"hello")
    os.symlink(base / "f.txt", base / "link")
    (base / "d").mkdir()
    os.mkfifo(base / "pipe")
    kinds = {name: agent.stat_path(str(base), name, True, False, cache)["kind"] for name in os.listdir(base)}
    assert kinds == {"f.txt": "file", "link": "symlink", "d": "directory", "pipe": "special"}
    assert agent.stat_path(str(base), "absent", True, False, cache)["kind"] == "missing"
    out = agent.stat_path(str(base), "f.txt", True, False, cache)
    assert out["size"] == 5 and out["sha256"] == hashlib.sha256(b"hello").hexdigest()
    assert out["mtime_ns"] == (base / "f.txt").stat().st_mtime_ns
    link = agent.stat_path(str(base), "link", True, False, cache)
    assert (link["size"], link["sha256"]) == (None, None)


def test_hash_cache_hit_and_invalidation(tmp_path: Path, cache: str) -> None:
    (tmp_path / "f").write_bytes(b"a" * 1000)
    first = agent.stat_path(str(tmp_path), "f", True, False, cache)
    assert first["hashed_bytes"] == 1000
    second = agent.stat_path(str(tmp_path), "f", True, False, cache)
    assert second["hashed_bytes"] == 0 and second["sha256"] == first["sha256"]
    (tmp_path / "f").write_bytes(b"b" * 1000)  # same size, new content
    third = agent.stat_path(str(tmp_path), "f", True, False, cache)
    assert third["hashed_bytes"] == 1000 and third["sha256"] == hashlib.sha256(b"b" * 1000).hexdigest()
    assert agent.stat_path(str(tmp_path), "f", False, False, cache)["sha256"] is None


def test_parquet_shape_and_a_missing_base(tmp_path: Path, cache: str) -> None:
    pq.write_table(pa.table({"a": [1, 2, 3], "b": ["x", "y", "z"]}), tmp_path / "t.parquet")
    assert agent.stat_path(str(tmp_path), "t.parquet", True, True, cache)["shape"] == [3, 2]
    (tmp_path / "t.csv").write_text("a\n")
    assert agent.stat_path(str(tmp_path), "t.csv", True, True, cache)["shape"] is None
    assert agent.stat_path(str(tmp_path / "no" / "such"), "x", True, False, cache)["kind"] == "missing"
    (tmp_path / "plain").write_text("x")
    with pytest.raises(agent.AgentError, match="base_dir is not a directory"):
        agent.stat_path(str(tmp_path / "plain"), "x", True, False, cache)


def test_unsafe_relative_paths_and_symlinked_parents_are_refused(tmp_path: Path, cache: str) -> None:
    base, outside = tmp_path / "base", tmp_path / "outside"
    base.mkdir()
    outside.mkdir()
    (outside / "secret").write_text("s")
    os.symlink(outside, base / "escape")
    for rel in ("../outside/secret", "/etc/passwd", "a//b"):
        with pytest.raises(agent.AgentError, match="unsafe relative path"):
            agent.stat_path(str(base), rel, True, False, cache)
    with pytest.raises(agent.AgentError, match="escapes base_dir through a symlink"):
        agent.stat_path(str(base), "escape/secret", True, False, cache)


def test_stat_op_as_a_subprocess(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"data")
    request = {"op": "stat", "base": str(tmp_path), "rel": "f", "cache_path": str(tmp_path / "c.json")}
    proc = subprocess.run(
        [sys.executable, agent.__file__, json.dumps(request)], capture_output=True, text=True, timeout=20
    )
    answer = json.loads(proc.stdout.strip().splitlines()[-1])
    assert answer["ok"] is True
    stat = FileStat.from_agent(answer["result"])
    assert (stat.kind, stat.size, stat.sha256) == ("file", 4, hashlib.sha256(b"data").hexdigest())
    assert stat.exists


def test_local_transport_stat_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "f").write_bytes(b"xyz")
    t = LocalTransport(tmp_path)
    st = t.stat_file("sub/f")
    assert (st.kind, st.size, st.sha256) == ("file", 3, hashlib.sha256(b"xyz").hexdigest())
    assert t.stat_file("sub/none") == FileStat(kind="missing")
    with pytest.raises(TransferError, match="unsafe relative path"):
        t.stat_file("../x")
    with pytest.raises(TransferError, match="unknown file kind"):
        FileStat.from_agent({"kind": "socket"})
