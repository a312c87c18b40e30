"""File streams (transport/ssh_stream.py + the agent's recv/send ops) against the real sshd, over
both backends: many files per exec, parallel streams, and corrupted bytes caught by the hashes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from usrbatch.errors import VerificationError
from usrbatch.remotes import RemoteConfig
from usrbatch.transport import ssh_stream
from usrbatch.transport.base import Transfer
from usrbatch.transport.factory import open_transport

try:
    from .services import SshdServer
except ImportError:  # pytest "prepend" import mode
    from services import SshdServer  # type: ignore[no-redef]


@pytest.fixture
def base(tmp_path: Path) -> Path:
    path = tmp_path / "remote base"
    path.mkdir()
    return path


@pytest.fixture
def transport(sshd_server: SshdServer, base: Path, ssh_backend: str):
    remote = RemoteConfig(
        name="s", type="ssh", host=sshd_server.alias, user=sshd_server.user, base_dir=str(base)
    )
    t = open_transport(remote, ssh_config_path=sshd_server.ssh_config, retries=2, backoff=0.05)
    yield t
    t.close()


def _files(src: Path, count: int, size: int, prefix: str = "ds/_derived/infer") -> list[Transfer]:
    items = []
    for i in range(count):
        data = os.urandom(size + i)
        path = src / f"part-{i:05d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        items.append(
            Transfer(f"{prefix}/part-{i:05d}.parquet", path, len(data), hashlib.sha256(data).hexdigest())
        )
    return items


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_many_small_files_move_in_one_exec_each_way(transport, base: Path, tmp_path: Path) -> None:
    """2,000 small files (more than a default descriptor limit; answer lines of ~136 KB): one
    agent exec up and one down, no retry, no SFTP session, no per-file round trip."""
    items = _files(tmp_path / "src", 2000, 1024)
    transport.upload(items)
    assert transport.stats.execs == 1 and transport.stats.sftp_sessions == 0 and transport.stats.retries == 0
    back = [Transfer(i.remote, tmp_path / "back" / i.remote, i.size, i.sha256) for i in items]
    transport.download(back)
    assert transport.stats.execs == 2 and transport.stats.sftp_sessions == 0 and transport.stats.retries == 0
    for item, got in zip(items, back, strict=True):
        assert _sha(base / item.remote) == item.sha256 == _sha(got.local)
    total = sum(i.size for i in items)
    assert transport.stats.bytes_up == transport.stats.bytes_down == total


def test_uploaded_hashes_are_not_computed_again_by_apply(transport, base: Path, tmp_path: Path) -> None:
    """The receiving agent hashes as it writes; apply's verify then reads nothing again, unless
    the temp changed since (its lstat key no longer matches)."""
    items = _files(tmp_path / "src", 3, 100_000, prefix="ds")
    temps = [Transfer(i.remote.replace("part-", ".usrbatch-tmp-p"), i.local, i.size, i.sha256) for i in items]
    transport.upload(temps)
    after = transport.apply(
        [(t.remote, i.remote) for t, i in zip(temps, items, strict=True)],
        [],
        verify={t.remote: t.sha256 for t in temps},
        inventory="ds",
    )
    assert after is not None and after.hashed_bytes == 0
    assert {rel: e.sha256 for rel, e in after.files.items()} == {
        i.remote.removeprefix("ds/"): i.sha256 for i in items
    }


def test_parallel_streams_split_a_batch_and_each_file_arrives_whole(
    transport, base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ssh_stream.STREAMS_ENV, "3")
    items = _files(tmp_path / "src", 7, 700_000)
    transport.upload(items)
    assert transport.stats.execs == 3
    back = [Transfer(i.remote, tmp_path / "back" / i.remote, i.size, i.sha256) for i in items]
    transport.download(back)
    assert transport.stats.execs == 6
    for item, got in zip(items, back, strict=True):
        assert _sha(base / item.remote) == item.sha256 == _sha(got.local)


class _Corrupting:
    """A session whose file bytes get one flipped byte (the first block past the request)."""

    def __init__(self, chan, budget: list[int]) -> None:
        self._chan = chan
        self._budget = budget
        self._sent = 0

    def __getattr__(self, name: str):
        return getattr(self._chan, name)

    def sendall(self, data: bytes) -> None:
        self._sent += 1
        if self._sent > 1 and self._budget[0] > 0 and len(data) > 1000:  # call 1: bootstrap + request
            self._budget[0] -= 1
            data = data[:500] + bytes([data[500] ^ 0x01]) + data[501:]
        self._chan.sendall(data)

    def recv(self, size: int) -> bytes:
        data = self._chan.recv(size)
        if self._budget[0] > 0 and len(data) > 1000:
            self._budget[0] -= 1
            data = data[:700] + bytes([data[700] ^ 0x01]) + data[701:]
        return data


def _corrupt(monkeypatch: pytest.MonkeyPatch, transport, times: int) -> list[int]:
    budget = [times]
    opened = transport._open_channel
    monkeypatch.setattr(transport, "_open_channel", lambda: _Corrupting(opened(), budget))
    return budget


def test_a_flipped_byte_in_an_upload_is_caught_and_sent_again(
    transport, base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = _files(tmp_path / "src", 2, 300_000)
    budget = _corrupt(monkeypatch, transport, times=1)
    transport.upload(items)  # the remote hash differs: that file is sent again from byte 0
    assert budget == [0] and transport.stats.execs == 2
    for item in items:
        assert _sha(base / item.remote) == item.sha256
    _corrupt(monkeypatch, transport, times=10)
    items2 = _files(tmp_path / "src2", 1, 300_000, prefix="ds/again")
    with pytest.raises(VerificationError, match=r"Uploaded ds/again/part-00000\.parquet does not match"):
        transport.upload(items2)


def test_a_flipped_byte_in_a_download_is_refused(
    transport, base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = _files(tmp_path / "src", 1, 300_000)
    transport.upload(items)
    _corrupt(monkeypatch, transport, times=1)
    local = tmp_path / "back.bin"
    with pytest.raises(
        VerificationError, match=r"Downloaded ds/_derived/infer/part-00000\.parquet does not match"
    ):
        transport.download([Transfer(items[0].remote, local, items[0].size, items[0].sha256)])


def test_a_remote_file_that_changed_size_is_refused(transport, base: Path, tmp_path: Path) -> None:
    (base / "ds").mkdir()
    (base / "ds" / "f.bin").write_bytes(b"x" * 5000)
    with pytest.raises(VerificationError, match=r"Remote ds/f\.bin changed during the transfer: 5000 bytes"):
        transport.download([Transfer("ds/f.bin", tmp_path / "f.bin", 4000, "0" * 64)])
