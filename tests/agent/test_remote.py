"""The stdlib agent on real temp dirs: inventory, apply, hash, mkdir, probe, the dataset lock."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from usrbatch.agent import remote as agent

AGENT_PY = Path(agent.__file__)


def _dataset(root: Path) -> Path:
    ds = root / "ns" / "demo"
    (ds / "_derived" / "infer").mkdir(parents=True)
    (ds / "records.parquet").write_bytes(b"PAR1" + b"\0" * 100)
    (ds / ".events.log").write_text('{"a":1}\n{"a":2}\n{"a":3}\n')
    (ds / "_derived" / "infer" / "part-1.parquet").write_bytes(b"part")
    for runtime in (".usr.lock", ".events.lock", ".usr.transfer.lock", ".usr.lease.dataset.abc"):
        (ds / runtime).write_text("lock")
    (ds / "_derived" / ".usrbatch-tmp-upload").write_bytes(b"partial")
    return ds


def test_inventory_rejects_symlink_and_fifo_and_skips_runtime_names(tmp_path: Path) -> None:
    ds = _dataset(tmp_path)
    os.symlink("/etc/passwd", ds / "escape.link")
    os.mkfifo(ds / "_derived" / "pipe")
    out = agent.inventory(str(ds), cache_path=str(tmp_path / "cache.json"))
    assert out["exists"] is True
    assert sorted(out["files"]) == [".events.log", "_derived/infer/part-1.parquet", "records.parquet"]
    assert sorted(map(tuple, out["rejected"])) == [("_derived/pipe", "special"), ("escape.link", "symlink")]
    assert out["events_lines"] == 3
    size, _mtime, sha = out["files"]["_derived/infer/part-1.parquet"]
    assert size == 4
    import hashlib

    assert sha == hashlib.sha256(b"part").hexdigest()


def test_inventory_of_missing_dir_is_not_existing(tmp_path: Path) -> None:
    out = agent.inventory(str(tmp_path / "absent"), cache_path=str(tmp_path / "c.json"))
    assert out["exists"] is False and out["files"] == {}


def test_hash_cache_makes_second_inventory_hash_nothing(tmp_path: Path) -> None:
    ds = _dataset(tmp_path)
    cache = str(tmp_path / "cache.json")
    first = agent.inventory(str(ds), cache_path=cache)
    total = sum(v[0] for v in first["files"].values())
    assert first["hashed_bytes"] == total > 0
    second = agent.inventory(str(ds), cache_path=cache)
    assert second["hashed_bytes"] == 0
    assert second["files"] == first["files"]
    (ds / "records.parquet").write_bytes(b"PAR1 changed")
    third = agent.inventory(str(ds), cache_path=cache)
    assert third["hashed_bytes"] == len(b"PAR1 changed")


def test_apply_renames_then_removes_and_prunes(tmp_path: Path) -> None:
    ds = _dataset(tmp_path)
    (ds / "_derived" / "infer" / ".usrbatch-tmp-new").write_bytes(b"new")
    (ds / "_artifacts" / "deep").mkdir(parents=True)
    (ds / "_artifacts" / "deep" / "old.json").write_text("{}")
    out = agent.apply_changes(
        str(tmp_path),
        [["ns/demo/_derived/infer/.usrbatch-tmp-new", "ns/demo/_derived/other/part-2.parquet"]],
        ["ns/demo/_artifacts/deep/old.json", "ns/demo/never-existed.txt"],
    )
    assert out == {"renamed": 1, "removed": 1, "pruned": 2}
    assert (ds / "_derived" / "other" / "part-2.parquet").read_bytes() == b"new"
    assert not (ds / "_derived" / "infer" / ".usrbatch-tmp-new").exists()
    assert not (ds / "_artifacts").exists()
    assert (ds / "records.parquet").exists()


def test_apply_replaces_existing_target_atomically(tmp_path: Path) -> None:
    ds = _dataset(tmp_path)
    (ds / ".usrbatch-tmp-rec").write_bytes(b"newer records")
    agent.apply_changes(str(tmp_path), [["ns/demo/.usrbatch-tmp-rec", "ns/demo/records.parquet"]], [])
    assert (ds / "records.parquet").read_bytes() == b"newer records"


@pytest.mark.parametrize(
    ("renames", "removals", "needle"),
    [
        ([["ns/demo/records.parquet", "../outside"]], [], "unsafe relative path"),
        ([["ns/demo/records.parquet", "/etc/x"]], [], "unsafe relative path"),
        ([], ["ns/../../x"], "unsafe relative path"),
        ([], ["ns/demo/_derived"], "refusing to remove a directory"),
        ([["ns/demo/missing.bin", "ns/demo/x"]], [], "rename source missing"),
    ],
)
def test_apply_refuses_bad_paths_before_changing_anything(
    tmp_path: Path, renames: list, removals: list, needle: str
) -> None:
    ds = _dataset(tmp_path)
    (ds / "first.tmp").write_bytes(b"1")
    good = [["ns/demo/first.tmp", "ns/demo/first.bin"]]
    with pytest.raises(agent.AgentError, match=needle):
        agent.apply_changes(str(tmp_path), good + renames, removals)
    assert (ds / "first.tmp").exists() and not (ds / "first.bin").exists()


def test_apply_verify_mismatch_renames_nothing_and_removes_the_temp_files(tmp_path: Path) -> None:
    import hashlib

    ds = _dataset(tmp_path)
    (ds / ".usrbatch-tmp-a").write_bytes(b"good")
    (ds / "_derived" / ".usrbatch-tmp-b").write_bytes(b"damaged in transit")
    verify = {
        "ns/demo/.usrbatch-tmp-a": hashlib.sha256(b"good").hexdigest(),
        "ns/demo/_derived/.usrbatch-tmp-b": hashlib.sha256(b"sent").hexdigest(),
    }
    renames = [
        ["ns/demo/.usrbatch-tmp-a", "ns/demo/a.bin"],
        ["ns/demo/_derived/.usrbatch-tmp-b", "ns/demo/_derived/b.bin"],
    ]
    with pytest.raises(
        agent.VerifyMismatch, match=r"ns/demo/_derived/\.usrbatch-tmp-b does not match"
    ) as err:
        agent.apply_changes(str(tmp_path), renames, ["ns/demo/records.parquet"], verify)
    assert err.value.rel == "ns/demo/_derived/.usrbatch-tmp-b"
    assert not (ds / "a.bin").exists() and not (ds / "_derived" / "b.bin").exists()
    assert not (ds / ".usrbatch-tmp-a").exists() and not (ds / "_derived" / ".usrbatch-tmp-b").exists()
    assert (ds / "records.parquet").exists()  # removals not applied either


def test_apply_verifies_then_returns_the_post_apply_inventory(tmp_path: Path) -> None:
    import hashlib

    ds = _dataset(tmp_path)
    (ds / ".usrbatch-tmp-a").write_bytes(b"good")
    out = agent.apply_changes(
        str(tmp_path),
        [["ns/demo/.usrbatch-tmp-a", "ns/demo/_derived/new/a.bin"]],
        ["ns/demo/_derived/infer/part-1.parquet"],
        {"ns/demo/.usrbatch-tmp-a": hashlib.sha256(b"good").hexdigest()},
        "ns/demo",
        True,
        str(tmp_path / "cache.json"),
    )
    inv = out["inventory"]
    assert (out["renamed"], out["removed"]) == (1, 1)
    fresh = agent.inventory(str(ds), True, True, str(tmp_path / "other-cache.json"))
    assert {k: v for k, v in inv.items() if k != "hashed_bytes"} == {
        k: v for k, v in fresh.items() if k != "hashed_bytes"
    }
    # the verified upload is not hashed a second time: its hash went into the cache under the
    # renamed file's fresh lstat key
    assert inv["hashed_bytes"] == fresh["hashed_bytes"] - len(b"good")
    assert agent.inventory(str(ds), True, False, str(tmp_path / "cache.json"))["hashed_bytes"] == 0
    assert inv["files"]["_derived/new/a.bin"][2] == hashlib.sha256(b"good").hexdigest()
    assert "_derived/infer/part-1.parquet" not in inv["files"]
    assert inv["primary_shape"] is None  # records.parquet here is not a parquet file
    with pytest.raises(agent.AgentError, match="unsafe relative path"):
        agent.apply_changes(str(tmp_path), [], [], None, "../x")


def test_apply_refuses_symlink_escape(tmp_path: Path) -> None:
    base = tmp_path / "base"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_text("keep")
    base.mkdir()
    os.symlink(outside, base / "ds")
    with pytest.raises(agent.AgentError, match="escapes base_dir"):
        agent.apply_changes(str(base), [], ["ds/victim.txt"])
    assert (outside / "victim.txt").read_text() == "keep"


def test_apply_checks_each_directory_once_and_still_refuses_an_escape_among_many(tmp_path: Path) -> None:
    """One request with many files in a few directories checks each directory's parent chain
    once (resolve_under's per-request set); a symlinked directory among them is still refused
    and nothing is renamed."""
    base = tmp_path / "base"
    outside = tmp_path / "outside"
    outside.mkdir()
    (base / "ds" / "ok").mkdir(parents=True)
    os.symlink(outside, base / "ds" / "link")
    renames = []
    for i in range(50):
        (base / "ds" / f".usrbatch-tmp-{i}").write_bytes(b"x")
        renames.append([f"ds/.usrbatch-tmp-{i}", f"ds/ok/f{i}"])
    renames.append(["ds/.usrbatch-tmp-0", "ds/link/evil"])
    with pytest.raises(agent.AgentError, match="rename target 'ds/link/evil' escapes base_dir"):
        agent.apply_changes(str(base), renames, [])
    assert list(outside.iterdir()) == [] and list((base / "ds" / "ok").iterdir()) == []
    checked: set[str] = set()
    for i in range(50):
        agent.resolve_under(str(base), f"ds/ok/f{i}", checked=checked)
    assert checked == {str(base / "ds" / "ok")}
    with pytest.raises(agent.AgentError, match="escapes base_dir"):
        agent.resolve_under(str(base), "ds/link/x", checked=checked)


def test_hash_and_mkdir_and_probe(tmp_path: Path) -> None:
    ds = _dataset(tmp_path)
    os.symlink("records.parquet", ds / "alias")
    got = agent.hash_paths(str(tmp_path), ["ns/demo/records.parquet", "ns/demo/alias", "ns/demo/nope"])[
        "files"
    ]
    assert got["ns/demo/records.parquet"][0] == 104
    assert got["ns/demo/alias"] is None and got["ns/demo/nope"] is None
    agent.make_dirs(str(tmp_path), ["a/b/c", "d"])
    assert (tmp_path / "a" / "b" / "c").is_dir() and (tmp_path / "d").is_dir()
    info = agent.probe(str(tmp_path))
    assert info["base_exists"] is True and info["base_writable"] is True
    assert info["python"].startswith("3.")
    assert list(tmp_path.glob(".usrbatch-tmp-doctor-*")) == []
    assert agent.probe(str(tmp_path / "missing"))["base_exists"] is False


def test_dataset_lock_times_out_while_held_and_frees_on_release(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    first = agent.hold_lock(str(ds), timeout=1, token="a" * 32)
    with first:
        assert (ds / ".usr.lease.dataset.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa").is_file()
        with pytest.raises(agent.LockTimeout) as info, agent.hold_lock(str(ds), timeout=0.3):
            pass
        assert info.value.which == "dataset"
    assert not list(ds.glob(".usr.lease.*"))
    # It waits for the holder rather than failing at once: a holder that lets go during the wait
    # hands the lock over (no wall-time bound asserted; the timeout path above ends on its own).
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with agent.hold_lock(str(ds), timeout=1, token="b" * 32):
            held.set()
            release.wait(30)

    thread = threading.Thread(target=holder)
    thread.start()
    assert held.wait(30)
    threading.Timer(0.2, release.set).start()
    with agent.hold_lock(str(ds), timeout=30) as lock:
        assert release.is_set() and lock is not None
    thread.join(30)
    assert not list(ds.glob(".usr.lease.*"))
    with agent.hold_lock(str(ds), timeout=0.3, events="exclusive"):
        pass


def test_event_lock_modes(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    ds.mkdir()
    import fcntl

    fd = os.open(ds / ".events.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_SH)  # a reader (another process) holds the event log shared
    try:
        with agent.hold_lock(str(ds), timeout=0.3, events="shared"):
            pass
        with (
            pytest.raises(agent.LockTimeout) as info,
            agent.hold_lock(str(ds), timeout=0.3, events="exclusive"),
        ):
            pass
        assert info.value.which == "events"
    finally:
        os.close(fd)


def _run_agent(request: dict, stdin_extra: bytes = b"", timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(AGENT_PY)],
        input=json.dumps(request).encode() + b"\n" + stdin_extra,
        capture_output=True,
        timeout=timeout,
    )


def test_main_answers_one_json_line_and_reports_errors(tmp_path: Path) -> None:
    ds = _dataset(tmp_path)
    res = _run_agent(
        {"op": "inventory", "base": str(tmp_path), "rel": "ns/demo", "cache_path": str(tmp_path / "c")}
    )
    data = json.loads(res.stdout)
    assert data["ok"] is True and "records.parquet" in data["result"]["files"]
    bad = json.loads(_run_agent({"op": "inventory", "base": str(tmp_path), "rel": "../x"}).stdout)
    assert bad["ok"] is False and "unsafe relative path" in bad["error"]
    assert json.loads(_run_agent({"op": "nope"}).stdout)["ok"] is False
    assert ds.exists()


def test_lease_op_prints_marker_blocks_and_releases_on_eof(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(AGENT_PY)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    req = {"op": "lease", "base": str(tmp_path), "rel": "ns/ds", "token": "t" * 32, "timeout": 2}
    assert proc.stdin and proc.stdout
    proc.stdin.write(json.dumps(req).encode() + b"\n")
    proc.stdin.flush()
    assert proc.stdout.readline().decode().strip() == "USR_REMOTE_LOCK_ACQUIRED:" + "t" * 32
    contender = _run_agent(
        {"op": "lease", "base": str(tmp_path), "rel": "ns/ds", "token": "u" * 32, "timeout": 0.3}
    )
    assert contender.returncode == agent.LOCK_TIMEOUT_EXIT
    assert contender.stdout.decode().strip() == "USR_REMOTE_LOCK_TIMEOUT:" + "u" * 32
    proc.stdin.close()  # EOF releases, exactly like a dropped connection
    assert proc.wait(timeout=10) == 0
    later = _run_agent(
        {"op": "lease", "base": str(tmp_path), "rel": "ns/ds", "token": "v" * 32, "timeout": 1}, b"release\n"
    )
    assert later.returncode == 0 and b"USR_REMOTE_LOCK_ACQUIRED:" + b"v" * 32 in later.stdout
    assert not list((tmp_path / "ns" / "ds").glob(".usr.lease.*"))


def test_lease_op_with_inventory_answers_it_after_the_marker_under_the_lock(tmp_path: Path) -> None:
    ds = tmp_path / "ns" / "ds"
    (ds / "_derived" / "x").mkdir(parents=True)
    (ds / "records.parquet").write_bytes(b"r")
    (ds / "_derived" / "x" / "part-1.parquet").write_bytes(b"p")
    proc = subprocess.Popen([sys.executable, str(AGENT_PY)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    req = {"op": "lease", "base": str(tmp_path), "rel": "ns/ds", "token": "i" * 32, "timeout": 2}
    req["inventory"] = {"parquet_stats": False}
    assert proc.stdin and proc.stdout
    proc.stdin.write(json.dumps(req).encode() + b"\n")
    proc.stdin.flush()
    assert proc.stdout.readline().decode().strip() == "USR_REMOTE_LOCK_ACQUIRED:" + "i" * 32
    answer = json.loads(proc.stdout.readline())
    assert answer["ok"] is True
    expected = agent.inventory(str(ds), True, False, str(tmp_path / "c.json"))
    assert answer["result"]["files"] == expected["files"]
    assert sorted(answer["result"]["files"]) == [
        "_derived/x/part-1.parquet",
        "records.parquet",
    ]  # no lock files
    with pytest.raises(agent.LockTimeout), agent.hold_lock(str(ds), timeout=0.2):
        pass  # still held while the answer is read
    proc.stdin.write(b"release\n")
    proc.stdin.flush()
    assert proc.stdout.readline().decode().strip() == "USR_REMOTE_LOCK_RELEASED:" + "i" * 32
    assert proc.wait(timeout=10) == 0


def test_lease_op_releases_on_release_line(tmp_path: Path) -> None:
    got: list[bytes] = []

    def run() -> None:
        got.append(
            _run_agent(
                {"op": "lease", "base": str(tmp_path), "rel": "d", "token": "w" * 32, "timeout": 1},
                b"release\n",
            ).stdout
        )

    th = threading.Thread(target=run)
    th.start()
    th.join(20)
    assert got and got[0].splitlines()[-1] == b"USR_REMOTE_LOCK_RELEASED:" + b"w" * 32


def test_agent_source_parses_as_python_3_6() -> None:
    source = AGENT_PY.read_text()
    ast.parse(source, feature_version=(3, 6))
    tree = ast.parse(source)
    futures = [
        a.name
        for n in ast.walk(tree)
        if isinstance(n, ast.ImportFrom) and n.module == "__future__"
        for a in n.names
    ]
    assert "annotations" not in futures  # a SyntaxError before Python 3.7
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert "usrbatch" not in imported


OLD_PYTHONS = [p for p in (Path.home() / ".pyenv" / "versions").glob("3.[6-9].*/bin/python3") if p.is_file()]


@pytest.mark.skipif(not OLD_PYTHONS, reason="no Python 3.6-3.9 interpreter installed (pyenv)")
@pytest.mark.parametrize("python", OLD_PYTHONS, ids=lambda p: p.parent.parent.name)
def test_agent_runs_on_old_pythons_through_the_bootstrap(python: Path, tmp_path: Path) -> None:
    from usrbatch.agent import client

    _dataset(tmp_path)
    (tmp_path / "ns" / "demo" / ".usrbatch-tmp-n").write_bytes(b"n")

    def call(req: dict, extra: bytes = b"") -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(python), "-c", client.BOOTSTRAP],
            input=client.encode(req) + extra,
            capture_output=True,
            timeout=30,
        )

    inv = json.loads(
        call(
            {"op": "inventory", "base": str(tmp_path), "rel": "ns/demo", "cache_path": str(tmp_path / "c")}
        ).stdout
    )
    assert inv["ok"], inv
    assert (
        inv["result"]["files"]
        == agent.inventory(str(tmp_path / "ns" / "demo"), cache_path=str(tmp_path / "c2"))["files"]
    )
    res = json.loads(
        call(
            {
                "op": "apply",
                "base": str(tmp_path),
                "renames": [["ns/demo/.usrbatch-tmp-n", "ns/demo/n"]],
                "removals": [],
            }
        ).stdout
    )
    assert res == {
        "ok": True,
        "agent_version": agent.AGENT_VERSION,
        "python": str(python),
        "result": {"renamed": 1, "removed": 0, "pruned": 0},
    }
    assert json.loads(call({"op": "probe", "base": str(tmp_path)}).stdout)["result"]["base_writable"] is True
    lease = call(
        {"op": "lease", "base": str(tmp_path), "rel": "ns/demo", "token": "z" * 32, "timeout": 2},
        b"release\n",
    )
    assert lease.returncode == 0 and lease.stdout.splitlines()[0] == b"USR_REMOTE_LOCK_ACQUIRED:" + b"z" * 32


def test_apply_does_not_cache_an_upload_changed_after_its_check(tmp_path: Path, monkeypatch) -> None:
    import hashlib

    ds = _dataset(tmp_path)
    (ds / ".usrbatch-tmp-a").write_bytes(b"good")
    real_replace = agent.os.replace

    def replace_then_tamper(src, dst):
        real_replace(src, dst)
        if dst.endswith("a.bin"):
            Path(dst).write_bytes(b"evil")  # same size, new content after the verification
            agent.os.utime(dst, ns=(1, 1))

    monkeypatch.setattr(agent.os, "replace", replace_then_tamper)
    out = agent.apply_changes(
        str(tmp_path),
        [["ns/demo/.usrbatch-tmp-a", "ns/demo/a.bin"]],
        [],
        {"ns/demo/.usrbatch-tmp-a": hashlib.sha256(b"good").hexdigest()},
        "ns/demo",
        False,
        str(tmp_path / "cache.json"),
    )
    assert out["inventory"]["files"]["a.bin"][2] == hashlib.sha256(b"evil").hexdigest()


def test_cache_files_of_removed_datasets_are_pruned_at_most_daily(tmp_path: Path) -> None:
    cache_dir = tmp_path / "hash-cache"
    kept_ds, gone_ds = _dataset(tmp_path / "a"), _dataset(tmp_path / "b")
    kept = cache_dir / "kept.json"
    gone = cache_dir / "gone.json"
    agent.inventory(str(kept_ds), True, False, str(kept))
    agent.inventory(str(gone_ds), True, False, str(gone))
    assert agent.cache_dataset_dir(str(gone)) == str(gone_ds)
    legacy_old, legacy_new = cache_dir / "legacy-old.json", cache_dir / "legacy-new.json"
    for legacy in (legacy_old, legacy_new):
        legacy.write_text('{"v":1,"files":{}}')
    old = agent.time.time() - agent.LEGACY_MAX_AGE_S - 60
    agent.os.utime(legacy_old, (old, old))
    import shutil

    shutil.rmtree(gone_ds)
    # the first save above stamped the marker: a save today does not scan again
    agent.inventory(str(kept_ds), True, False, str(kept))
    (kept_ds / "new.txt").write_text("x")
    agent.inventory(str(kept_ds), True, False, str(kept))
    assert gone.exists()
    # a day later the next save prunes: the removed dataset's file and the stale legacy file go
    marker = cache_dir / agent.PRUNE_MARKER
    day_ago = agent.time.time() - agent.PRUNE_EVERY_S - 1
    agent.os.utime(marker, (day_ago, day_ago))
    (kept_ds / "new2.txt").write_text("y")
    agent.inventory(str(kept_ds), True, False, str(kept))
    assert not gone.exists() and not legacy_old.exists()
    assert kept.exists() and legacy_new.exists()
    assert agent.inventory(str(kept_ds), True, False, str(kept))["hashed_bytes"] == 0
    assert agent.prune_cache_dir(str(cache_dir)) == 0  # marker fresh again
