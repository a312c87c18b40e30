"""SshTransport against the real private sshd: inventory, transfers, resume, apply, leases, host keys."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import time
from pathlib import Path

import paramiko
import pytest

from usrbatch.agent import remote as agent
from usrbatch.errors import RemoteUnavailableError, TransferError, VerificationError
from usrbatch.remotes import RemoteConfig
from usrbatch.transport.base import Inventory, Transfer, Transport
from usrbatch.transport.factory import open_transport
from usrbatch.transport.ssh import SFTP_MAX_REQUEST, SshTransport, sftp_request_sizes
from usrbatch.transport.ssh_config import fingerprint

try:
    from .services import SshdServer
except ImportError:  # pytest "prepend" import mode: tests/integration is on sys.path
    from services import SshdServer  # type: ignore[no-redef]

NASTY = "sp ace $(touch {pwned}) `touch {pwned}` 'q\" ;x"


@pytest.fixture
def pwned(tmp_path: Path) -> Path:
    return tmp_path / "pwned"


@pytest.fixture
def base(tmp_path: Path, pwned: Path) -> Path:
    """A base_dir with spaces, quotes and command substitutions in its name."""
    path = tmp_path / NASTY.format(pwned=pwned)
    path.mkdir(parents=True)
    return path


def _remote(server: SshdServer, base: Path, **kw: object) -> RemoteConfig:
    return RemoteConfig(name="t", type="ssh", host=server.alias, user=server.user, base_dir=str(base), **kw)  # type: ignore[arg-type]


@pytest.fixture
def transport(sshd_server: SshdServer, base: Path, ssh_backend: str):
    """An ssh transport of each backend (openssh over its own ControlMaster, paramiko)."""
    t = open_transport(
        _remote(sshd_server, base), ssh_config_path=sshd_server.ssh_config, retries=2, backoff=0.1
    )
    assert isinstance(t, SshTransport) and isinstance(t, Transport)
    yield t
    t.close()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _make_dataset(ds: Path, derived_files: int = 3) -> None:
    (ds / "_derived" / "infer").mkdir(parents=True)
    (ds / "_registry").mkdir()
    (ds / "records.parquet").write_bytes(os.urandom(5000))
    (ds / ".events.log").write_text('{"e":1}\n{"e":2}\n')
    (ds / "meta.md").write_text("# demo\n")
    (ds / "_registry" / "note.yaml").write_text("a: 1\n")
    for i in range(derived_files):
        (ds / "_derived" / "infer" / f"part-{i:05d}.parquet").write_bytes(f"part {i}".encode())
    (ds / ".usr.lock").write_text("")
    os.symlink("/etc/passwd", ds / "_derived" / "evil.link")
    os.mkfifo(ds / "fifo")


def test_inventory_over_ssh_equals_local_agent_in_one_exec(
    transport: SshTransport, base: Path, tmp_path: Path, pwned: Path
) -> None:
    ds_id = "ns/da ta$(touch " + str(pwned) + ")"
    _make_dataset(base / ds_id)
    remote = transport.inventory(ds_id)
    assert transport.stats.execs == 1 and transport.stats.connects == 1
    local = Inventory.from_agent(agent.inventory(str(base / ds_id), cache_path=str(tmp_path / "c.json")))
    assert remote.exists and remote.files == local.files
    assert (
        sorted(remote.rejected)
        == sorted(local.rejected)
        == [("_derived/evil.link", "symlink"), ("fifo", "special")]
    )
    assert remote.events_lines == 2
    assert ".usr.lock" not in remote.files
    assert not transport.inventory("ns/absent").exists
    assert transport.stats.execs == 2
    assert not pwned.exists()


def test_sh_fallback_inventory_matches_python_agent(sshd_server: SshdServer, base: Path) -> None:
    _make_dataset(base / "demo")
    with SshTransport(_remote(sshd_server, base), ssh_config_path=sshd_server.ssh_config) as py:
        expected = py.inventory("demo")
    with SshTransport(
        _remote(sshd_server, base), ssh_config_path=sshd_server.ssh_config, force_sh=True
    ) as sh:
        got = sh.inventory("demo")
        assert sh.stats.execs == 1
        assert not sh.inventory("absent").exists
        hashes = sh.remote_hashes(["demo/records.parquet", "demo/missing"])
    assert got.files == expected.files
    assert sorted(got.rejected) == sorted(expected.rejected)
    assert got.events_lines == expected.events_lines == 2
    assert hashes["demo/records.parquet"][2] == expected.files["records.parquet"].sha256  # type: ignore[index]
    assert hashes["demo/missing"] is None


def test_inventory_round_trips_are_constant_for_2000_files(transport: SshTransport, base: Path) -> None:
    _make_dataset(base / "big", derived_files=2000)
    first = transport.inventory("big")  # its wall time is bench/bench_inventory.py's business
    assert len(first.files) == 2004
    assert transport.stats.execs == 1
    second = transport.inventory("big")
    assert transport.stats.execs == 2
    assert second.hashed_bytes == 0  # remote hash cache: unchanged files are not re-hashed
    assert second.files == first.files


def test_upload_download_round_trip_with_20mb_file(
    transport: SshTransport, base: Path, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    files = {
        "big.bin": os.urandom(20 * 1024 * 1024),
        "small.txt": b"hello\n",
        "empty": b"",
        "sub/x.json": b"{}",
    }
    items = []
    for name, data in files.items():
        p = src / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        items.append(Transfer(f"ds/_derived/{name}", p, len(data), hashlib.sha256(data).hexdigest()))
    moved: list[int] = []
    transport.upload(items, progress=lambda _rel, n: moved.append(n))
    assert sum(moved) == sum(len(d) for d in files.values())
    for name, data in files.items():
        assert (base / "ds" / "_derived" / name).read_bytes() == data
    dst = tmp_path / "dst"
    back = [Transfer(i.remote, dst / i.remote, i.size, i.sha256) for i in items]
    transport.download(back)
    for item in back:
        assert _sha(item.local) == item.sha256
    assert transport.stats.connects == 1
    assert transport.stats.bytes_down == transport.stats.bytes_up == sum(len(d) for d in files.values())


def test_sftp_requests_use_the_servers_declared_limits(
    transport: SshTransport, base: Path, tmp_path: Path
) -> None:
    """OpenSSH declares its SFTP limits (limits@openssh.com); reads and writes then go out in
    255 KiB requests instead of paramiko's 32 KiB, and odd sizes still arrive byte-exact."""
    with transport._sftp() as client:
        assert sftp_request_sizes(client) == (SFTP_MAX_REQUEST, SFTP_MAX_REQUEST)
    data = os.urandom(3 * SFTP_MAX_REQUEST + 12345)
    src = tmp_path / "odd.bin"
    src.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    transport.upload([Transfer("limits/odd.bin", src, len(data), sha)])
    assert (base / "limits" / "odd.bin").read_bytes() == data
    transport.download([Transfer("limits/odd.bin", tmp_path / "back.bin", len(data), sha)])
    assert (tmp_path / "back.bin").read_bytes() == data


def test_download_resumes_partial_file_and_restarts_a_bad_one(
    transport: SshTransport, base: Path, tmp_path: Path
) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    (base / "ds").mkdir()
    (base / "ds" / "f.bin").write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    local = tmp_path / "f.bin"
    local.write_bytes(data[:1_000_000])
    transport.download([Transfer("ds/f.bin", local, len(data), sha)])
    assert local.read_bytes() == data
    assert transport.stats.resumed == 1 and transport.stats.bytes_down == len(data) - 1_000_000
    local.write_bytes(b"X" * 500_000)  # a partial file that is NOT a prefix: resume fails, then restart
    transport.download([Transfer("ds/f.bin", local, len(data), sha)])
    assert local.read_bytes() == data


def test_upload_resumes_partial_remote_file(transport: SshTransport, base: Path, tmp_path: Path) -> None:
    data = os.urandom(2 * 1024 * 1024 + 5)
    src = tmp_path / "up.bin"
    src.write_bytes(data)
    (base / "ds").mkdir()
    (base / "ds" / ".usrbatch-tmp-up").write_bytes(data[:700_000])
    transport.upload([Transfer("ds/.usrbatch-tmp-up", src, len(data), hashlib.sha256(data).hexdigest())])
    assert (base / "ds" / ".usrbatch-tmp-up").read_bytes() == data
    assert transport.stats.resumed == 1 and transport.stats.bytes_up == len(data) - 700_000


def test_upload_with_wrong_expected_sha_raises(transport: SshTransport, tmp_path: Path) -> None:
    src = tmp_path / "a"
    src.write_bytes(b"abc")
    from usrbatch.errors import VerificationError

    with pytest.raises(VerificationError, match="changed"):
        transport.upload([Transfer("ds/a", src, 3, "0" * 64)])


def test_upload_makes_parents_in_its_stream_and_apply_verifies_without_rehashing(
    sshd_server: SshdServer, tmp_path: Path
) -> None:
    base = tmp_path / "not yet" / "base"  # base_dir itself does not exist yet: created too
    base.parent.mkdir()
    src = tmp_path / "p.bin"
    src.write_bytes(b"payload")
    with SshTransport(_remote(sshd_server, base), ssh_config_path=sshd_server.ssh_config) as t:
        items = [
            Transfer("ns/ds/_derived/a/b/.usrbatch-tmp-1", src, 7, _sha(src)),
            Transfer("ns/ds/.usrbatch-tmp-2", src, 7, _sha(src)),
        ]
        t.upload(items)
        assert t.stats.execs == 1 and t.stats.sftp_sessions == 0  # one stream: parents, bytes, hashes
        (base / "ns/ds/.usrbatch-tmp-2").write_bytes(b"tampered")  # after the stream hashed it
        with pytest.raises(VerificationError, match=r"uploaded ns/ds/\.usrbatch-tmp-2 does not match"):
            t.apply(
                [(i.remote, i.remote.replace(".usrbatch-tmp-", "f")) for i in items],
                [],
                verify={i.remote: i.sha256 for i in items},
                inventory="ns/ds",
            )
        assert t.stats.execs == 2
        assert not any(
            ".usrbatch-tmp-" in p.name or p.name.startswith("f") for p in base.rglob("*") if p.is_file()
        )
        t.upload(items)
        after = t.apply(
            [(i.remote, i.remote.replace(".usrbatch-tmp-", "f")) for i in items],
            [],
            verify={i.remote: i.sha256 for i in items},
            inventory="ns/ds",
            parquet_stats=True,
        )
        assert t.stats.execs == 4
        assert after is not None and sorted(after.files) == ["_derived/a/b/f1", "f2"]
        assert after.files["f2"].sha256 == _sha(src)
        assert after.hashed_bytes == 0  # hashed once, by the stream; cached under the new key
        assert t.inventory("ns/ds").hashed_bytes == 0
        (base / "ns" / "link").symlink_to(tmp_path)
        with pytest.raises(TransferError, match="escapes base_dir through a symlink"):
            t.upload([Transfer("ns/link/x/.usrbatch-tmp-3", src, 7, _sha(src))])
        assert not (tmp_path / "x").exists()


def test_apply_renames_removes_and_refuses_escapes(transport: SshTransport, base: Path, pwned: Path) -> None:
    ds = base / "n s" / "d'q"
    ds.mkdir(parents=True)
    (ds / ".usrbatch-tmp-1").write_bytes(b"new")
    (ds / "_artifacts" / "a").mkdir(parents=True)
    (ds / "_artifacts" / "a" / "old.txt").write_text("old")
    transport.apply(
        [("n s/d'q/.usrbatch-tmp-1", "n s/d'q/_derived/p/part.parquet")], ["n s/d'q/_artifacts/a/old.txt"]
    )
    assert transport.stats.execs == 1
    assert (ds / "_derived" / "p" / "part.parquet").read_bytes() == b"new"
    assert not (ds / "_artifacts").exists()
    with pytest.raises(TransferError, match="unsafe relative path"):
        transport.apply([], ["../outside"])
    assert transport.stats.execs == 1  # refused before any round trip
    os.symlink("/tmp", ds / "escape")
    with pytest.raises(TransferError, match="escapes base_dir"):
        transport.apply([], ["n s/d'q/escape/x"])
    assert not pwned.exists()


def test_lease_contention_times_out_and_lease_dies_with_connection(
    sshd_server: SshdServer, base: Path, pwned: Path, ssh_backend: str
) -> None:
    ds_id = "ns/le ase$(touch " + str(pwned) + ")"
    remote = _remote(sshd_server, base)
    first = open_transport(remote, ssh_config_path=sshd_server.ssh_config)
    second = open_transport(remote, ssh_config_path=sshd_server.ssh_config)
    try:
        holder = first.lease(ds_id, timeout=30)
        lease = holder.__enter__()
        assert lease.alive() and len(lease.token) == 32
        assert (base / ds_id / f".usr.lease.dataset.{lease.token}").exists()
        with pytest.raises(TransferError) as info, second.lease(ds_id, timeout=1):
            pass
        assert (
            str(info.value)
            == f"Remote dataset lock for '{ds_id}' timeout on {sshd_server.user}@usrtest after 1 seconds"
        )
        first.close()  # the connection dies: the remote holder sees EOF and releases
        assert not lease.alive()
        with pytest.raises(TransferError, match="was lost"):
            holder.__exit__(None, None, None)
        with second.lease(ds_id, timeout=10) as again:
            assert again.alive()
        assert not list((base / ds_id).glob(".usr.lease.*"))
    finally:
        first.close()
        second.close()
    assert not pwned.exists()


def test_lease_with_inventory_is_one_exec_and_equals_the_inventory(
    transport: SshTransport, base: Path
) -> None:
    _make_dataset(base / "big", derived_files=300)
    with transport.lease("big", timeout=5, inventory=True) as lease:
        assert transport.stats.execs == 1
        assert lease.alive() and lease.inventory is not None
        with pytest.raises(agent.LockTimeout), agent.hold_lock(str(base / "big"), timeout=0.2):
            pass
    assert not lease.alive()
    plain = transport.inventory("big")
    assert lease.inventory.files == plain.files and len(plain.files) == 304
    assert sorted(lease.inventory.rejected) == sorted(plain.rejected)
    assert lease.inventory.events_lines == 2
    with transport.lease("big", timeout=5) as bare:
        assert bare.inventory is None


def test_lease_with_event_lock_and_release(transport: SshTransport, base: Path) -> None:
    with transport.lease("ds", timeout=5, events="exclusive") as lease:
        assert lease.alive()
        with pytest.raises(agent.LockTimeout), agent.hold_lock(str(base / "ds"), timeout=0.2):
            pass
        import fcntl

        fd = os.open(base / "ds" / ".events.lock", os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    assert not lease.alive()
    with agent.hold_lock(str(base / "ds"), timeout=2, events="exclusive"):
        pass


def test_lease_failure_reports_agent_error_without_stderr(transport: SshTransport, base: Path) -> None:
    os.symlink("/tmp", base / "escape")
    with (
        pytest.raises(
            TransferError, match="Failed to acquire remote dataset lock for 'escape/ds'.*escapes base_dir"
        ),
        transport.lease("escape/ds", timeout=1),
    ):
        pass


def _known_hosts_line(server: SshdServer, host: str, port: int) -> str:
    kind, blob = server.host_key_pub.read_text().split()[:2]
    return f"[{host}]:{port} {kind} {blob}\n"


def _direct_remote(server: SshdServer, base: Path, port: int | None = None) -> RemoteConfig:
    return RemoteConfig(
        name="d",
        type="ssh",
        host="127.0.0.1",
        user=server.user,
        port=port or server.port,
        base_dir=str(base),
        ssh_key_env="USRBATCH_TEST_SSH_KEY",
    )


@pytest.fixture
def empty_ssh_config(tmp_path: Path, sshd_server: SshdServer, monkeypatch: pytest.MonkeyPatch) -> Path:
    cfg = tmp_path / "empty_ssh_config"
    cfg.write_text("")
    monkeypatch.setenv("USRBATCH_TEST_SSH_KEY", str(sshd_server.client_key))
    return cfg


def test_unknown_host_key_is_refused_with_fix_and_fingerprint(
    sshd_server: SshdServer, base: Path, tmp_path: Path, empty_ssh_config: Path, ssh_backend: str
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    t = open_transport(_direct_remote(sshd_server, base), ssh_config_path=empty_ssh_config, known_hosts=empty)
    with pytest.raises(RemoteUnavailableError) as info:
        t.inventory("ds")
    msg = str(info.value)
    import paramiko

    server_key = paramiko.PKey.from_type_string(*_key_parts(sshd_server))
    assert "not trusted" in msg and "refusing to connect" in msg
    assert f"ssh-keyscan -p {sshd_server.port} 127.0.0.1 >> {empty}" in msg
    assert fingerprint(server_key) in msg
    assert empty.read_text() == ""  # never auto-added
    t.close()


def _key_parts(server: SshdServer) -> tuple[str, bytes]:
    import base64

    kind, blob = server.host_key_pub.read_text().split()[:2]
    return kind, base64.b64decode(blob)


def test_changed_host_key_is_refused_loudly(
    sshd_server: SshdServer, base: Path, tmp_path: Path, empty_ssh_config: Path, ssh_backend: str
) -> None:
    other = tmp_path / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    kind, blob = other.with_suffix(".pub").read_text().split()[:2]
    kh = tmp_path / "known_hosts"
    kh.write_text(f"[127.0.0.1]:{sshd_server.port} {kind} {blob}\n")
    before = kh.read_text()
    t = open_transport(_direct_remote(sshd_server, base), ssh_config_path=empty_ssh_config, known_hosts=kh)
    with pytest.raises(
        RemoteUnavailableError, match="HOST KEY CHANGED for \\[127.0.0.1\\]:.*Refusing to connect"
    ):
        t.inventory("ds")
    t.close()
    assert kh.read_text() == before


def test_hashed_known_hosts_entries_and_ssh_key_env_work(
    sshd_server: SshdServer, base: Path, tmp_path: Path, empty_ssh_config: Path
) -> None:
    kh = tmp_path / "known_hosts"
    kh.write_text(_known_hosts_line(sshd_server, "127.0.0.1", sshd_server.port))
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(kh)], check=True, capture_output=True)
    assert kh.read_text().startswith("|1|")
    with SshTransport(
        _direct_remote(sshd_server, base), ssh_config_path=empty_ssh_config, known_hosts=kh
    ) as t:
        assert not t.inventory("ds").exists
        assert t.connect().auth_method == str(sshd_server.client_key)


def test_proxy_jump_through_the_same_server(sshd_server: SshdServer, base: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "ssh_config"
    cfg.write_text(
        sshd_server.ssh_config.read_text()
        + f"\nHost viajump\n    HostName 127.0.0.1\n    Port {sshd_server.port}\n    User {sshd_server.user}\n"
        f"    IdentityFile {sshd_server.client_key}\n    IdentitiesOnly yes\n"
        f"    UserKnownHostsFile {sshd_server.known_hosts}\n    ProxyJump usrtest\n"
    )
    remote = RemoteConfig(name="j", type="ssh", host="viajump", user=sshd_server.user, base_dir=str(base))
    with SshTransport(remote, ssh_config_path=cfg) as t:
        (base / "ds").mkdir()
        (base / "ds" / "records.parquet").write_bytes(b"x")
        assert set(t.inventory("ds").files) == {"records.parquet"}
        conn = t.connect()
        assert len(conn.jumps) == 1
        first_hop = conn.jumps[0].sock
        assert first_hop.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        # OpenSSH offers GCM and this paramiko has it: the faster AEAD cipher is negotiated
        if "aes128-gcm@openssh.com" in paramiko.Transport._cipher_info:
            assert conn.transport.remote_cipher == "aes128-gcm@openssh.com"
            assert conn.transport.local_cipher == "aes128-gcm@openssh.com"


def test_lease_handshake_ignores_noise_and_never_shows_it(transport: SshTransport) -> None:
    from usrbatch.transport.ssh_lease import hold_lease, read_handshake

    chan = transport._open_channel()
    chan.exec_command(
        "echo motd noise; echo USR_REMOTE_LOCK_ACQUIRED; echo USR_REMOTE_LOCK_ACQUIRED:tok; cat"
    )
    hs = read_handshake(chan, "tok", time.monotonic() + 10)
    assert (hs.outcome, hs.noise) == ("acquired", 2)  # a bare marker without the token is noise
    chan.close()
    chan = transport._open_channel()
    chan.exec_command("echo secret-noise; echo secret-stderr >&2; exit 3")
    with (
        pytest.raises(TransferError) as info,
        hold_lease(chan, token="tok", dataset="ds", target="u@h", timeout=5, events="none"),
    ):
        pass
    assert str(info.value) == (
        "Failed to acquire remote dataset lock for 'ds' on u@h: missing lock handshake marker; "
        "remote stderr suppressed; stdout_noise_lines=1"
    )
    chan = transport._open_channel()
    chan.exec_command("sleep 30")
    lease = hold_lease(chan, token="tok", dataset="ds", target="u@h", timeout=0.5, events="none", slack=0.5)
    # The handshake deadline, not the remote `sleep 30`, ends the wait: the message says which.
    with pytest.raises(TransferError, match="Remote lock handshake exceeded 1 seconds"), lease:
        pass


def test_lease_without_python3_says_so(sshd_server: SshdServer, base: Path) -> None:
    with (
        SshTransport(_remote(sshd_server, base), ssh_config_path=sshd_server.ssh_config, force_sh=True) as t,
        pytest.raises(TransferError, match="python3 is not on the remote PATH"),
        t.lease("ds", timeout=1),
    ):
        pass


def test_sftp_errors_become_transfer_errors(transport: SshTransport, base: Path, tmp_path: Path) -> None:
    (base / "ds" / "dir.bin").mkdir(parents=True)  # the upload target is a directory
    src = tmp_path / "a"
    src.write_bytes(b"abc")
    with pytest.raises(TransferError, match="SSH upload of ds/dir.bin on .* failed"):
        transport.upload([Transfer("ds/dir.bin", src, 3, hashlib.sha256(b"abc").hexdigest())])
    with pytest.raises(TransferError, match="Remote file missing: ds/nope"):
        transport.download([Transfer("ds/nope", tmp_path / "nope", 1, "0" * 64)])


def test_later_execs_reuse_the_reported_interpreter(transport: SshTransport, base: Path) -> None:
    assert not transport.inventory("ds").exists
    first = transport._python
    assert first.startswith("/") and os.access(first, os.X_OK)
    transport.inventory("ds")  # runs `"$1" -c ...` with the cached path (still one exec)
    assert transport.stats.execs == 2 and transport._python == first
