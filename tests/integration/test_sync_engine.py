"""The engine scenarios of tests/sync, run again over SSH against the private sshd.

The same test functions (imported below) get a `sides` fixture whose transport is an SshTransport
to a base_dir on this machine; the engine code path is identical, which is the point.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sync"))
from builders import make_dataset, tree  # noqa: E402
from test_engine import *  # noqa: E402,F403
from test_engine_drills import *  # noqa: E402,F403

from usrbatch import auditlog  # noqa: E402
from usrbatch.errors import VerificationError  # noqa: E402
from usrbatch.remotes import RemoteConfig  # noqa: E402
from usrbatch.sync import engine  # noqa: E402
from usrbatch.sync.options import SyncOptions  # noqa: E402
from usrbatch.transport.factory import open_transport  # noqa: E402

try:
    from .services import SshdServer
except ImportError:  # pytest "prepend" import mode
    from services import SshdServer  # type: ignore[no-redef]

# Needs pyarrow in the remote python3, which the test host's system python lacks: covered below.
del test_verify_parquet_mode_reports_shapes  # noqa: F821
del test_copy_of_tree_helpers_detect_difference  # noqa: F821 - no transport involved


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
def sides(sshd_server: SshdServer, tmp_path: Path) -> Iterator[Sides]:
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


def test_ssh_parquet_mode_without_remote_pyarrow_is_an_actionable_error(sides):
    """`--verify parquet` needs row/col stats from the remote; without them the public message."""
    make_dataset(sides.remote_root, "densegen/demo")
    inv = sides.transport.inventory("densegen/demo", parquet_stats=True)
    if inv.primary_shape is not None:
        res = engine.pull(sides.local_root, "densegen/demo", sides.transport, SyncOptions(verify="parquet"))
        assert res.summary.primary_remote.rows == 3
        assert tree(sides.local_root / "densegen/demo") == tree(sides.remote_root / "densegen/demo")
        return
    with pytest.raises(VerificationError, match=r"^verify=parquet requires remote parquet row/col stats\.$"):
        engine.pull(sides.local_root, "densegen/demo", sides.transport, SyncOptions(verify="parquet"))
    assert not (sides.local_root / "densegen/demo").exists()
