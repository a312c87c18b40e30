"""Engine behaviour only SSH has: round trips per operation, the remote interpreter, the POSIX sh
fallback, resumed uploads, verification inside the remote apply; once per backend
(`ssh_backend`: openssh, paramiko).

The engine scenarios themselves (tests/sync/test_engine*.py, test_containment.py,
test_control_names.py, test_payload.py) run over local and both ssh backends through the `sides`
fixture of tests/sync/conftest.py; this module's own `sides` is the ssh one.
"""

from __future__ import annotations

import shlex
import time  # printed, never asserted: bench/ measures speed
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paramiko
import pyarrow.parquet as pq
import pytest
from builders import add_event, make_dataset, tree, write_part, write_records

from usrbatch import auditlog
from usrbatch.errors import VerificationError
from usrbatch.remotes import RemoteConfig
from usrbatch.sync import engine
from usrbatch.sync.options import SyncOptions
from usrbatch.transport.factory import open_transport
from usrbatch.transport.openssh import OpenSshTransport

try:
    from .services import SshdServer
except ImportError:  # pytest "prepend" import mode
    from services import SshdServer  # type: ignore[no-redef]


@dataclass
class Sides:
    local_root: Path
    remote_root: Path
    transport: object


@pytest.fixture(autouse=True)
def _private_hash_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))


@pytest.fixture(autouse=True)
def _audit_log_to_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "audit.jsonl"
    auditlog.configure(path)
    yield path
    auditlog.configure(None)


@pytest.fixture
def sides(sshd_server: SshdServer, tmp_path: Path, ssh_backend: str) -> Iterator[Sides]:
    local_root = tmp_path / "local"
    remote_root = tmp_path / "remote base"  # a space: paths must be quoted end to end
    local_root.mkdir()
    remote_root.mkdir()
    remote = RemoteConfig(
        name="hpc", type="ssh", host=sshd_server.alias, user=sshd_server.user, base_dir=str(remote_root)
    )
    transport = open_transport(remote, ssh_config_path=sshd_server.ssh_config, retries=2, backoff=0.1)
    try:
        yield Sides(local_root, remote_root, transport)
    finally:
        transport.close()


def test_ssh_parquet_mode_works_without_remote_pyarrow(sides):
    """The remote agent reads rows/cols from the parquet footer itself (stdlib only), so
    `--verify parquet` works where the remote python3 has no pyarrow (this sshd's python3)."""
    probe = sides.transport.probe()
    print(f"remote python {probe['python']} pyarrow={probe['pyarrow']}")
    make_dataset(sides.remote_root, "densegen/demo", rows=5)
    inv = sides.transport.inventory("densegen/demo", parquet_stats=True)
    expected = pq.ParquetFile(sides.remote_root / "densegen/demo/records.parquet").metadata
    assert inv.primary_shape == (expected.num_rows, expected.num_columns) == (5, 7)
    res = engine.pull(sides.local_root, "densegen/demo", sides.transport, SyncOptions(verify="parquet"))
    assert (res.summary.verify_mode, res.summary.primary_remote.rows, res.summary.primary_remote.cols) == (
        "parquet",
        5,
        7,
    )
    assert tree(sides.local_root / "densegen/demo") == tree(sides.remote_root / "densegen/demo")
    write_records(sides.local_root / "densegen/demo/records.parquet", 9, tag="p")
    res = engine.push(sides.local_root, "densegen/demo", sides.transport, SyncOptions(verify="parquet"))
    assert res.files_sent == 1 and res.summary.primary_local.rows == 9
    assert tree(sides.local_root / "densegen/demo") == tree(sides.remote_root / "densegen/demo")


def test_ssh_parquet_mode_with_unreadable_remote_primary_is_the_public_error(sides):
    """A remote records.parquet whose footer cannot be read: the §3.1 message, nothing written."""
    remote = make_dataset(sides.remote_root, "densegen/demo")
    data = (remote / "records.parquet").read_bytes()
    (remote / "records.parquet").write_bytes(data[:-20] + b"\xff" * 12 + data[-8:])  # footer damaged
    with pytest.raises(VerificationError, match=r"^verify=parquet requires remote parquet row/col stats\.$"):
        engine.pull(sides.local_root, "densegen/demo", sides.transport, SyncOptions(verify="parquet"))
    assert not (sides.local_root / "densegen/demo").exists()


def _record_commands(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every remote command line this process sends (exec channels, leases included)."""
    sent: list[str] = []
    real = paramiko.Channel.exec_command

    def exec_command(self, command):
        sent.append(command if isinstance(command, str) else command.decode())
        return real(self, command)

    monkeypatch.setattr(paramiko.Channel, "exec_command", exec_command)
    real_argv = OpenSshTransport._remote_argv

    def remote_argv(self, command):
        sent.append(command)
        return real_argv(self, command)

    monkeypatch.setattr(OpenSshTransport, "_remote_argv", remote_argv)
    return sent


def _changed_two_files(sides) -> None:
    make_dataset(sides.remote_root, "densegen/demo")
    engine.pull(sides.local_root, "densegen/demo", sides.transport)
    local = sides.local_root / "densegen/demo"
    write_part(local, "infer")
    (local / "_artifacts" / "batch" / "checkpoint.json").write_text('{"step": 2}\n')


def test_push_round_trips_noop_is_one_and_two_changed_files_are_at_most_four(sides, sshd_server, monkeypatch):
    _changed_two_files(sides)
    sent = _record_commands(monkeypatch)
    fresh = open_transport(sides.transport.remote, ssh_config_path=sshd_server.ssh_config)
    try:
        start = time.monotonic()
        res = engine.push(sides.local_root, "densegen/demo", fresh)
        push_s = time.monotonic() - start
        assert res.files_sent == 2
        # inventory, lease(+inventory), upload stream (no SFTP session), apply(+verify+inventory)
        assert fresh.stats.execs <= 4 and fresh.stats.sftp_sessions == 0, sent
        assert fresh.stats.connects == 1
        assert tree(sides.local_root / "densegen/demo") == tree(sides.remote_root / "densegen/demo")
        python = fresh._python
        assert python.startswith("/")
        # every exec after the first runs the interpreter the first answer reported (no shim)
        assert all(shlex.quote(python) in cmd or f" {python} " in cmd for cmd in sent[1:]), sent
        execs = fresh.stats.execs
        start = time.monotonic()
        res = engine.push(sides.local_root, "densegen/demo", fresh)
        noop_s = time.monotonic() - start
        assert res.transfer_state == "NO-OP"
        assert fresh.stats.execs - execs == 1
        print(f"push of 2 changed files: {execs} execs {push_s:.2f}s; no-op push: 1 exec {noop_s:.2f}s")
    finally:
        fresh.close()


def test_push_verification_failure_inside_apply_leaves_the_remote_unchanged(sides, monkeypatch):
    """A temp file that differs on the remote after upload: apply refuses, renames nothing."""
    _changed_two_files(sides)
    before = tree(sides.remote_root / "densegen/demo")
    real_upload = sides.transport.upload

    def upload_then_damage(items, *, progress=None):
        real_upload(items, progress=progress)
        victim = sides.remote_root / items[-1].remote
        victim.write_bytes(b"damaged after upload")

    monkeypatch.setattr(sides.transport, "upload", upload_then_damage)
    with pytest.raises(
        VerificationError, match=r"^Remote apply on .* refused: uploaded densegen/demo/.*usrbatch-tmp-"
    ):
        engine.push(sides.local_root, "densegen/demo", sides.transport)
    assert tree(sides.remote_root / "densegen/demo") == before
    leftovers = [p for p in (sides.remote_root / "densegen/demo").rglob("*") if ".usrbatch-tmp-" in p.name]
    assert leftovers == []


def test_diff_with_2000_overlay_parts_is_one_round_trip(sides):
    remote = make_dataset(sides.remote_root, "densegen/demo")
    engine.pull(sides.local_root, "densegen/demo", sides.transport)
    part = next((remote / "_derived" / "densegen").iterdir()).read_bytes()
    for d in (remote, sides.local_root / "densegen/demo"):
        for i in range(2000):
            (d / "_derived" / "infer").mkdir(parents=True, exist_ok=True)
            (d / "_derived" / "infer" / f"part-{i:05d}.parquet").write_bytes(part + str(i).encode())
    (remote / "_derived" / "infer" / "part-00007.parquet").write_bytes(b"changed remotely")
    execs = sides.transport.stats.execs
    plan = engine.plan_diff(sides.local_root, "densegen/demo", sides.transport, SyncOptions())
    assert sides.transport.stats.execs - execs == 1
    assert plan.summary.has_change


def test_push_resumes_a_dead_pushs_partial_temp_and_removes_stale_temps(sides):
    """A push whose link died left a partial upload temp (content-addressed name) and an older
    push left a temp for bytes no longer wanted: the next push sends only the missing tail of
    the first, removes the second, and the trees end byte-identical with no temp left."""
    import hashlib
    import os

    ds = "densegen/demo"
    local = make_dataset(sides.local_root, ds)
    engine.push(sides.local_root, ds, sides.transport)
    big = local / "_artifacts" / "model.bin"
    big.write_bytes(os.urandom(6 * 1024 * 1024))
    sha = hashlib.sha256(big.read_bytes()).hexdigest()
    remote = sides.remote_root / ds
    (remote / "_artifacts").mkdir(parents=True, exist_ok=True)
    partial = remote / "_artifacts" / f".usrbatch-tmp-{sha[:16]}-model.bin"
    partial.write_bytes(big.read_bytes()[: 4 * 1024 * 1024])  # the first 4 MiB arrived
    stale = remote / "_derived" / "densegen" / ".usrbatch-tmp-0123456789abcdef-part-old.parquet"
    stale.write_bytes(b"left by a push that died long ago")
    assert sides.transport.inventory(ds).temps == {
        f"_artifacts/{partial.name}": 4 * 1024 * 1024,
        f"_derived/densegen/{stale.name}": len(b"left by a push that died long ago"),
    }
    before = sides.transport.stats.bytes_up
    res = engine.push(sides.local_root, ds, sides.transport)
    assert res.files_sent == 1
    assert sides.transport.stats.resumed == 1
    assert sides.transport.stats.bytes_up - before == 2 * 1024 * 1024  # only the missing tail travelled
    assert tree(remote) == tree(local)
    assert [p for p in remote.rglob("*") if p.name.startswith(".usrbatch-tmp-")] == []


def test_reserved_remote_name_is_refused_over_the_sh_fallback_too(sides, sshd_server):
    """A remote without python3 is inventoried by the POSIX sh fallback: the engine refuses a
    planted control-file name all the same (the check is on the engine side, not the agent's)."""
    from usrbatch.errors import TransferError

    ds = "densegen/demo"
    make_dataset(sides.remote_root, ds)
    (sides.remote_root / ds / ".usr-promotion.json").write_text("{}")
    remote = RemoteConfig(
        name="hpc", type="ssh", host=sshd_server.alias, user=sshd_server.user, base_dir=str(sides.remote_root)
    )
    sh = open_transport(remote, ssh_config_path=sshd_server.ssh_config, force_sh=True)
    try:
        with pytest.raises(TransferError, match=r"'\.usr-promotion\.json' .*reserved for usrbatch"):
            engine.plan_diff(sides.local_root, ds, sh)
        with pytest.raises(TransferError, match="reserved for usrbatch"):
            engine.pull(sides.local_root, ds, sh)
    finally:
        sh.close()
    assert not (sides.local_root / ds).exists()


def test_noop_pull_and_incremental_push_round_trips_do_not_grow_with_the_part_count(sides, sshd_server):
    """Counted, not timed (bench/bench_b.py B3/B4 time them): a no-op pull is ONE exec and a push
    of 3 new parts + 1 event line takes as many execs at 150 parts as at 5."""
    counts: dict[int, tuple[int, int]] = {}
    for n in (5, 150):
        ds = f"densegen/parts{n}"
        remote = make_dataset(sides.remote_root, ds)
        first = (sides.remote_root / ds / "_derived" / write_part(remote, "infer")).read_bytes()
        for i in range(n - 1):
            (remote / "_derived" / "infer" / f"part-{i:05d}.parquet").write_bytes(first)
        engine.pull(sides.local_root, ds, sides.transport)
        local = sides.local_root / ds
        fresh = open_transport(sides.transport.remote, ssh_config_path=sshd_server.ssh_config)
        try:
            assert engine.pull(sides.local_root, ds, fresh).transfer_state == "NO-OP"
            noop_pull = fresh.stats.execs
            for _ in range(3):
                write_part(local, "infer")
            add_event(local, "attach", n=n)
            res = engine.push(sides.local_root, ds, fresh)
            assert res.files_sent == 4
            counts[n] = (noop_pull, fresh.stats.execs - noop_pull)
        finally:
            fresh.close()
        assert tree(local) == tree(remote)
    assert counts[5] == counts[150], counts
    assert counts[5][0] == 1, counts
    print(f"execs (no-op pull, incremental push): {counts}")
