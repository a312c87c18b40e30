"""The agent's `apply` keeps an upload's source mtime (`mtimes`), as rsync -t does, and only for
the files it renames."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from usrbatch.agent import remote as agent


def test_apply_sets_the_source_mtime_before_verify_and_rename(tmp_path: Path) -> None:
    (tmp_path / "ds").mkdir()
    temp = tmp_path / "ds" / ".usrbatch-tmp-meta.md"
    temp.write_bytes(b"# meta\n")
    sha = agent.sha256_file(str(temp))
    mtime = 1_767_225_600_123_456_789
    out = agent.apply_changes(
        str(tmp_path),
        [["ds/.usrbatch-tmp-meta.md", "ds/meta.md"]],
        [],
        {"ds/.usrbatch-tmp-meta.md": sha},
        "ds",
        mtimes={"ds/.usrbatch-tmp-meta.md": mtime},
    )
    assert (tmp_path / "ds" / "meta.md").stat().st_mtime_ns == mtime
    assert out["inventory"]["files"]["meta.md"][1] == mtime  # the post-apply inventory sees it


@pytest.mark.parametrize(
    ("mtimes", "message"),
    [
        ({"ds/other.txt": 1}, "not a rename source"),
        ({"ds/a.tmp": -1}, "non-negative integer"),
        ({"ds/a.tmp": "1"}, "non-negative integer"),
        ({"../x": 1}, "mtime path"),
    ],
)
def test_apply_refuses_bad_mtimes_before_changing_anything(tmp_path: Path, mtimes, message) -> None:
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "a.tmp").write_bytes(b"a")
    (tmp_path / "ds" / "other.txt").write_bytes(b"o")
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in (tmp_path / "ds").iterdir()}
    with pytest.raises(agent.AgentError, match=message):
        agent.apply_changes(str(tmp_path), [["ds/a.tmp", "ds/a"]], [], mtimes=mtimes)
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in (tmp_path / "ds").iterdir()}
    assert after == before and not os.path.exists(tmp_path / "ds" / "a")
