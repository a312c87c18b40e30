"""Connection drops mid-file (a TCP proxy cuts the stream): reconnect, resume, identical sha256."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

import pytest

from usrbatch import auditlog
from usrbatch.remotes import RemoteConfig
from usrbatch.transport.base import Transfer
from usrbatch.transport.factory import open_transport
from usrbatch.transport.openssh import OpenSshTransport

try:
    from .services import SshdServer
    from .tcp_proxy import TcpProxy
except ImportError:  # pytest "prepend" import mode
    from services import SshdServer  # type: ignore[no-redef]
    from tcp_proxy import TcpProxy  # type: ignore[no-redef]

SIZE = 24 * 1024 * 1024


@pytest.fixture
def proxied(sshd_server: SshdServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ssh_backend: str):
    """(transport through a cuttable proxy, proxy, base_dir, audit log path)."""
    base = tmp_path / "base dir"
    base.mkdir()
    with TcpProxy(sshd_server.host, sshd_server.port) as proxy:
        kind, blob = sshd_server.host_key_pub.read_text().split()[:2]
        known = tmp_path / "known_hosts"
        known.write_text(f"[127.0.0.1]:{proxy.port} {kind} {blob}\n")
        cfg = tmp_path / "ssh_config"
        cfg.write_text("")
        monkeypatch.setenv("USRBATCH_TEST_SSH_KEY", str(sshd_server.client_key))
        remote = RemoteConfig(
            name="p",
            type="ssh",
            host="127.0.0.1",
            user=sshd_server.user,
            port=proxy.port,
            base_dir=str(base),
            ssh_key_env="USRBATCH_TEST_SSH_KEY",
        )
        log = tmp_path / "audit.jsonl"
        auditlog.configure(log)
        t = open_transport(remote, ssh_config_path=cfg, known_hosts=known, retries=4, backoff=0.05)
        try:
            yield t, proxy, base, log
        finally:
            t.close()
            auditlog.configure(None)


def _retry_events(log: Path) -> list[dict]:
    lines = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
    return [x for x in lines if x["event"] == "sync.retry"]


def test_download_cut_mid_file_reconnects_and_resumes(proxied, tmp_path: Path) -> None:
    t, proxy, base, log = proxied
    data = os.urandom(SIZE)
    (base / "ds").mkdir()
    (base / "ds" / "big.bin").write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    t.inventory("ds")  # connect before arming the cut
    proxy.cut_after(SIZE // 3)
    local = tmp_path / "out" / "big.bin"
    t.download([Transfer("ds/big.bin", local, SIZE, sha)])
    assert proxy.cuts == 1
    assert hashlib.sha256(local.read_bytes()).hexdigest() == sha
    assert t.stats.connects == 2 and t.stats.retries >= 1 and t.stats.resumed == 1
    assert t.stats.bytes_down < SIZE * 1.5  # resumed, not restarted
    events = _retry_events(log)
    assert events and events[0]["path"] == "ds/big.bin" and events[0]["attempt"] == 1 and events[0]["error"]
    assert (
        "USRBATCH_TEST_SSH_KEY" not in log.read_text() and str(t.remote.ssh_key_path()) not in log.read_text()
    )


def test_upload_cut_mid_file_reconnects_and_resumes(proxied, tmp_path: Path) -> None:
    t, proxy, base, log = proxied
    data = os.urandom(SIZE)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    t.inventory("ds")
    proxy.cut_after(SIZE // 2)
    t.upload([Transfer("ds/_derived/.usrbatch-tmp-big", src, SIZE, sha)])
    assert proxy.cuts == 1
    assert hashlib.sha256((base / "ds" / "_derived" / ".usrbatch-tmp-big").read_bytes()).hexdigest() == sha
    assert t.stats.connects == 2 and t.stats.resumed == 1
    assert _retry_events(log)


def test_inventory_after_a_dropped_connection_reconnects(proxied) -> None:
    t, proxy, base, _log = proxied
    (base / "ds").mkdir()
    (base / "ds" / "records.parquet").write_bytes(b"x" * 10)
    assert t.inventory("ds").exists
    proxy.cut_after(1)
    if isinstance(t, OpenSshTransport):  # some traffic so the proxy cuts (this exec fails)
        with contextlib.suppress(Exception):
            t.run_sh("true")
    else:
        t.connect().transport.send_ignore()
    assert t.inventory("ds").files["records.parquet"].size == 10
    assert t.stats.connects == 2


def test_several_files_in_flight_survive_a_cut(proxied, tmp_path: Path) -> None:
    t, proxy, base, _log = proxied
    src = tmp_path / "many"
    src.mkdir()
    items = []
    for i in range(8):
        data = os.urandom(3 * 1024 * 1024 + i)
        (src / f"f{i}").write_bytes(data)
        items.append(
            Transfer(f"ds/_derived/p/f{i}", src / f"f{i}", len(data), hashlib.sha256(data).hexdigest())
        )
    t.inventory("ds")
    proxy.cut_after(8 * 1024 * 1024)
    t.upload(items)
    proxy.cut_after(12 * 1024 * 1024)
    back = [Transfer(i.remote, tmp_path / "back" / i.remote, i.size, i.sha256) for i in items]
    t.download(back)
    assert proxy.cuts == 2 and t.stats.connects == 3
    for item in back:
        assert hashlib.sha256(item.local.read_bytes()).hexdigest() == item.sha256
        assert hashlib.sha256((base / item.remote).read_bytes()).hexdigest() == item.sha256


def test_parallel_streams_cut_mid_way_resume_and_verify(proxied, tmp_path: Path, monkeypatch) -> None:
    """Two streams side by side (USRBATCH_STREAMS=2), the link cut mid-way each direction: every
    stream reconnects and resumes from the bytes kept (not from zero), and every file's sha256 is
    the source's on both sides."""
    t, proxy, base, _log = proxied
    monkeypatch.setenv("USRBATCH_STREAMS", "2")
    src = tmp_path / "two"
    src.mkdir()
    items = []
    for i in range(4):
        data = os.urandom(5 * 1024 * 1024 + i)
        (src / f"f{i}").write_bytes(data)
        items.append(
            Transfer(f"ds/_derived/q/f{i}", src / f"f{i}", len(data), hashlib.sha256(data).hexdigest())
        )
    total = sum(i.size for i in items)
    t.inventory("ds")
    proxy.cut_after(total // 2)
    t.upload(items)
    assert proxy.cuts == 1 and t.stats.connects == 2 and t.stats.resumed >= 1
    assert t.stats.execs >= 3  # the inventory, then one exec per stream (and the resumed ones)
    assert t.stats.bytes_up < total * 1.5  # resumed, not restarted
    proxy.cut_after(total // 2)
    back = [Transfer(i.remote, tmp_path / "back" / i.remote, i.size, i.sha256) for i in items]
    t.download(back)
    assert proxy.cuts == 2 and t.stats.connects == 3
    assert t.stats.bytes_down < total * 1.5
    for item in back:
        assert hashlib.sha256(item.local.read_bytes()).hexdigest() == item.sha256
        assert hashlib.sha256((base / item.remote).read_bytes()).hexdigest() == item.sha256
