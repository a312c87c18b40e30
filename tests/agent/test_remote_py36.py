"""The agent's real ops under the oldest Python it claims (3.6), sent through the ssh bootstrap the
way a remote runs it: each answer must equal the answer of the same op under the test's Python."""

from __future__ import annotations

import datetime
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from usrbatch.agent import client
from usrbatch.agent import remote as agent


def _run(python: str, req: dict) -> dict:
    out = subprocess.run(
        [python, "-c", client.BOOTSTRAP],
        input=client.encode(req),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr.decode()
    return json.loads(out.stdout.decode().splitlines()[-1])


def _records(n: int) -> pa.Table:
    from usrbatch.dataset.schema import CORE_SCHEMA

    seqs = ["ACGT" * (i + 1) for i in range(n)]
    return pa.table(
        {
            "id": [f"id{i}" for i in range(n)],
            "bio_type": ["dna"] * n,
            "sequence": seqs,
            "alphabet": ["dna_4"] * n,
            "length": pa.array([len(s) for s in seqs], pa.int32()),
            "source": ["t"] * n,
            "created_at": pa.array(
                [datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)] * n, CORE_SCHEMA.field(6).type
            ),
        },
        schema=CORE_SCHEMA,
    )


def _dataset(root: Path) -> Path:
    ds = root / "ns" / "demo"
    (ds / "_derived" / "x").mkdir(parents=True)
    pq.write_table(_records(4), ds / "records.parquet")
    pq.write_table(
        pa.table({"id": ["id0", "id1"], "x__score": [1.0, 2.0]}), ds / "_derived" / "x" / "part-1.parquet"
    )
    (ds / "meta.md").write_text("name: demo\n")
    (ds / ".events.log").write_text('{"e":1}\n{"e":2}\n{"e":3}\n')
    return ds


def _without_python(answer: dict) -> dict:
    return {k: v for k, v in answer.items() if k != "python"}


def test_inventory_stat_and_probe_answer_alike_on_python_3_6(tmp_path: Path, agent_python_36: str) -> None:
    ds = _dataset(tmp_path)
    cache = tmp_path / "cache"
    cache.mkdir()
    for op in (
        {"op": "inventory", "base": str(tmp_path), "rel": "ns/demo", "hashes": True, "parquet_stats": True},
        {"op": "stat", "base": str(tmp_path), "rel": "ns/demo/records.parquet", "parquet_stats": True},
        {"op": "stat", "base": str(tmp_path), "rel": "ns/demo/nothing.parquet"},
        {"op": "hash", "base": str(tmp_path), "paths": ["ns/demo/meta.md", "ns/demo/gone"]},
    ):
        req = dict(op, cache_path=str(cache / "old.json")) if op["op"] != "hash" else op
        old = _run(agent_python_36, req)
        new = _run(
            sys.executable, dict(req, cache_path=str(cache / "new.json")) if "cache_path" in req else req
        )
        assert old["ok"] is True, old
        assert _without_python(old) == _without_python(new), op
    inv = _run(
        agent_python_36, {"op": "inventory", "base": str(tmp_path), "rel": "ns/demo", "parquet_stats": True}
    )
    files = inv["result"]["files"]
    assert files["meta.md"][2] == hashlib.sha256(b"name: demo\n").hexdigest()
    assert inv["result"]["primary_shape"] == [4, 7] and inv["result"]["events_lines"] == 3
    assert sorted(files) == [".events.log", "_derived/x/part-1.parquet", "meta.md", "records.parquet"]
    st = _run(
        agent_python_36,
        {"op": "stat", "base": str(tmp_path), "rel": "ns/demo/records.parquet", "parquet_stats": True},
    )
    assert st["result"]["kind"] == "file" and st["result"]["shape"] == [4, 7]
    assert st["result"]["sha256"] == hashlib.sha256((ds / "records.parquet").read_bytes()).hexdigest()
    probe = _run(agent_python_36, {"op": "probe", "base": str(tmp_path)})
    assert probe["result"]["python"].startswith("3.6.") and probe["result"]["base_writable"] is True


def test_apply_with_verify_payload_mtimes_renames_on_python_3_6(tmp_path: Path, agent_python_36: str) -> None:
    ds = _dataset(tmp_path)
    pq.write_table(_records(6), ds / ".usrbatch-tmp-r")
    (ds / ".usrbatch-tmp-m").write_bytes(b"name: demo v2\n")
    digest = {
        n: hashlib.sha256((ds / n).read_bytes()).hexdigest() for n in (".usrbatch-tmp-r", ".usrbatch-tmp-m")
    }
    req = {
        "op": "apply",
        "base": str(tmp_path),
        "renames": [
            ["ns/demo/.usrbatch-tmp-r", "ns/demo/records.parquet"],
            ["ns/demo/.usrbatch-tmp-m", "ns/demo/meta.md"],
        ],
        "removals": ["ns/demo/_derived/x/part-1.parquet"],
        "verify": {f"ns/demo/{n}": d for n, d in digest.items()},
        "payload": {"ns/demo/.usrbatch-tmp-r": "records", "ns/demo/.usrbatch-tmp-m": "meta"},
        "mtimes": {"ns/demo/.usrbatch-tmp-m": 1_700_000_000_123_456_789},
        "inventory": "ns/demo",
        "parquet_stats": True,
        "cache_path": str(tmp_path / "cache.json"),
    }
    bad = dict(req, verify={"ns/demo/.usrbatch-tmp-r": "0" * 64})
    refused = _run(agent_python_36, bad)
    assert (
        refused["ok"] is False
        and refused["kind"] == "verification"
        and refused["path"] == "ns/demo/.usrbatch-tmp-r"
    )
    # the listed upload is removed, nothing is renamed or removed
    assert [p.name for p in ds.glob(".usrbatch-tmp-*")] == [".usrbatch-tmp-m"]
    assert pq.read_table(ds / "records.parquet").num_rows == 4 and (ds / "_derived" / "x").is_dir()
    pq.write_table(_records(6), ds / ".usrbatch-tmp-r")
    done = _run(agent_python_36, req)
    assert done["ok"] is True, done
    assert pq.read_table(ds / "records.parquet").num_rows == 6
    assert (ds / "meta.md").read_bytes() == b"name: demo v2\n"
    assert (ds / "meta.md").stat().st_mtime_ns == 1_700_000_000_123_456_789
    assert not (ds / "_derived").exists()  # removed, and its empty parents pruned
    inv = done["result"]["inventory"]
    assert sorted(inv["files"]) == [".events.log", "meta.md", "records.parquet"]
    assert inv["primary_shape"] == [6, 7] and inv["files"]["records.parquet"][2] == digest[".usrbatch-tmp-r"]
    # the same inventory as the agent computes in-process, cache warm from the verified uploads
    here = agent.inventory(str(ds), True, True, str(tmp_path / "cache.json"))
    assert here["files"] == inv["files"] and here["hashed_bytes"] == 0


def test_lease_holds_the_dataset_lock_on_python_3_6(tmp_path: Path, agent_python_36: str) -> None:
    _dataset(tmp_path)
    req = {
        "op": "lease",
        "base": str(tmp_path),
        "rel": "ns/demo",
        "token": "t36",
        "timeout": 10,
        "events": "exclusive",
        "inventory": {"parquet_stats": True},  # answered on the line after the marker
    }
    proc = subprocess.Popen(
        [agent_python_36, "-c", client.BOOTSTRAP],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(client.encode(req))
        proc.stdin.flush()
        assert proc.stdout.readline() == b"USR_REMOTE_LOCK_ACQUIRED:t36\n"
        answer = json.loads(proc.stdout.readline().decode())
        assert answer["ok"] and "records.parquet" in answer["result"]["files"]
        with pytest.raises(agent.LockTimeout), agent.hold_lock(str(tmp_path / "ns" / "demo"), timeout=0.2):
            pass
        proc.stdin.write(b"release\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == b"USR_REMOTE_LOCK_RELEASED:t36\n"
        assert proc.wait(timeout=30) == 0
        with agent.hold_lock(str(tmp_path / "ns" / "demo"), timeout=5):
            pass
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_loader_keeps_and_reuses_a_compiled_copy_on_python_3_6(tmp_path: Path, agent_python_36: str) -> None:
    from usrbatch.agent import loader

    req = {"op": "probe", "base": str(tmp_path)}
    first = _run(agent_python_36, req)
    assert first["ok"] and first["result"]["python"].startswith("3.6.")
    [stored] = Path(loader.cache_dir()).glob("*-cpython-36-*.code")
    assert stored.stat().st_mode & 0o777 == 0o600
    out = subprocess.run(
        [agent_python_36, "-c", client.BOOTSTRAP],
        input=client.encode(req, with_source=False),
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert json.loads(out.stdout.decode().splitlines()[-1])["result"] == first["result"]
