"""FILE mode (usrbatch/sync/filemode.py) end to end against a real transport: every scenario runs
over a `local` remote and over the private sshd (the `fm` fixture of conftest.py).

Every test works on real files and checks bytes on disk on both sides.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from builders import add_event, make_dataset, write_records
from sides import FileSides

from usrbatch.errors import DatasetError, RemoteConfigError, TransferError, VerificationError
from usrbatch.remotes import RemoteConfig
from usrbatch.sync import filemode
from usrbatch.transport.base import Transport

REL = "results/run 1/scores.parquet"  # a space: paths must be quoted end to end
# Scenarios that only resolve paths (no transport) need not run over ssh.
LOCAL_ONLY = pytest.mark.parametrize("fm", ["local"], indirect=True)


def write_table(path: Path, rows: int, cols: int = 2, tag: str = "a") -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({f"c{j}": [f"{tag}{i}" for i in range(rows)] for j in range(cols)}), path)
    return path.read_bytes()


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def temps(*dirs: Path) -> list[Path]:
    return [p for d in dirs if d.exists() for p in d.rglob("*") if p.name.startswith(".usrbatch-tmp-")]


def run(fm: FileSides, action: str, raw: Path | str, *, transport_wrapper=None, **kw):
    """Resolve the target like the CLI does, open its transport, run diff/pull/push, close."""
    remote_path = kw.pop("remote_path", None)
    repo_root = kw.pop("repo_root", None)
    target = filemode.resolve_file_target(str(raw), fm.remote, remote_path=remote_path, repo_root=repo_root)
    transport = fm.open(target.remote)
    if transport_wrapper is not None:
        transport = transport_wrapper(transport, target)
    try:
        fn = {"diff": filemode.diff_file, "pull": filemode.pull_file, "push": filemode.push_file}[action]
        return fn(target, transport, **kw)
    finally:
        transport.close()


class Faulty:
    """A real transport with one operation made to misbehave (see the subclasses)."""

    def __init__(self, inner: Transport, target: filemode.FileTarget) -> None:
        self.inner = inner
        self.target = target
        self.fired = False

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


class CorruptUploadedTemp(Faulty):
    """The upload lands, then its temp file on the remote is damaged before `apply` checks it."""

    def upload(self, items, *, progress=None):
        self.inner.upload(items, progress=progress)
        temp = Path(self.target.remote.base_dir) / items[0].remote
        temp.write_bytes(b"X" + temp.read_bytes()[1:])
        self.fired = True


class ReplaceDownloadedRows(Faulty):
    """The download is verified by the transport, then the staged temp is swapped for a parquet
    with other rows (what a failing disk or a concurrent writer would leave)."""

    def download(self, items, *, progress=None):
        self.inner.download(items, progress=progress)
        write_table(Path(items[0].local), 1)
        self.fired = True


class DropHalfWay(Faulty):
    """The connection drops after half the file arrived (the partial stays on disk)."""

    def download(self, items, *, progress=None):
        self.inner.download(items, progress=progress)
        local = Path(items[0].local)
        data = local.read_bytes()
        local.write_bytes(data[: len(data) // 2])
        self.fired = True
        raise TransferError("connection dropped during download")


# -- round trips ------------------------------------------------------------------------------


def test_push_then_pull_round_trip_byte_identical(fm: FileSides) -> None:
    local, remote = fm.local_repo / REL, fm.remote_repo / REL
    data = write_table(local, 5)
    res = run(fm, "push", local)
    assert (res.action, res.transfer_state, res.files_sent, res.locked) == ("push", "TRANSFERRED", 1, False)
    assert remote.read_bytes() == data
    assert res.summary.dataset == str(local)
    assert res.summary.primary_local.sha256 == sha(local)
    # The remote side gets a new version; pull brings it back with its mtime.
    new = write_table(remote, 9, tag="hpc")
    os.utime(remote, ns=(1_767_225_600_000_000_000, 1_767_225_600_000_000_000))
    res = run(fm, "pull", local)
    assert res.transfer_state == "TRANSFERRED" and res.bytes_sent == len(new)
    assert local.read_bytes() == new
    assert local.stat().st_mtime_ns == remote.stat().st_mtime_ns
    assert temps(fm.local_repo, fm.remote_repo) == []


class RecordStats(Faulty):
    """The real transport; every stat_file answer is kept."""

    stats: list = []

    def stat_file(self, rel, **kw):
        out = self.inner.stat_file(rel, **kw)
        RecordStats.stats.append(out)
        return out


def test_pushed_bytes_are_hashed_once_on_the_remote(fm: FileSides, monkeypatch: pytest.MonkeyPatch) -> None:
    """apply's verified sha256 enters the hash cache of the file's directory, so the post-push
    stat reads it instead of hashing the file a second time."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(fm.local_repo.parent / "cache"))
    local = fm.local_repo / REL
    write_table(local, 50)
    RecordStats.stats = []
    run(fm, "push", local, transport_wrapper=RecordStats)
    post = RecordStats.stats[-1]
    assert post.sha256 == sha(fm.remote_repo / REL) and post.hashed_bytes == 0


def test_equal_sha_is_already_up_to_date_with_no_transfer(fm: FileSides) -> None:
    local, remote = fm.local_repo / REL, fm.remote_repo / REL
    write_table(local, 4)
    run(fm, "push", local)
    before = (local.stat().st_ino, remote.stat().st_ino, remote.stat().st_mtime_ns)
    seen = []
    for action in ("push", "pull"):
        res = run(fm, action, local, on_plan=seen.append)
        assert (res.transfer_state, res.files_sent, res.bytes_sent) == ("NO-OP", 0, 0)
    assert [s.has_change for s in seen] == [False, False]
    assert (local.stat().st_ino, remote.stat().st_ino, remote.stat().st_mtime_ns) == before
    diff = run(fm, "diff", local)
    assert diff.transfer_state == "DIFF-ONLY" and not diff.summary.has_change


def test_same_size_rewrite_is_a_change(fm: FileSides) -> None:
    local, remote = fm.local_repo / "notes.txt", fm.remote_repo / "notes.txt"
    local.write_text("version A\n")
    run(fm, "push", local)
    remote.write_text("version B\n")  # same size, same name: only the hash tells
    res = run(fm, "diff", local, verify="size")
    assert res.summary.has_change and res.summary.verify_mode == "size"
    assert run(fm, "pull", local, verify="size").transfer_state == "TRANSFERRED"
    assert local.read_text() == "version B\n"


@pytest.mark.parametrize("mode", ["size", "parquet", "auto"])
def test_verify_modes_round_trip(fm: FileSides, mode: str) -> None:
    local, remote = fm.local_repo / REL, fm.remote_repo / REL
    write_table(local, 6, cols=3)
    res = run(fm, "push", local, verify=mode)
    expected_mode = "hash" if mode == "auto" else mode
    assert res.summary.verify_mode == expected_mode
    write_table(remote, 7, cols=4, tag="r")
    res = run(fm, "pull", local, verify=mode)
    assert res.transfer_state == "TRANSFERRED" and local.read_bytes() == remote.read_bytes()
    diff = run(fm, "diff", local, verify=mode).summary
    if mode == "parquet":
        assert (diff.primary_local.rows, diff.primary_local.cols) == (7, 4)
        assert (diff.primary_remote.rows, diff.primary_remote.cols) == (7, 4)
    else:
        assert diff.primary_remote.rows is None


def test_parquet_verify_of_a_non_parquet_file_is_refused(fm: FileSides) -> None:
    local = fm.local_repo / "table.csv"
    local.write_text("a,b\n1,2\n")
    run(fm, "push", local)
    with pytest.raises(VerificationError, match=r"^verify=parquet requires remote parquet row/col stats\.$"):
        run(fm, "diff", local, verify="parquet")


def test_pull_of_a_missing_remote_file_is_refused_and_creates_nothing(fm: FileSides) -> None:
    local = fm.local_repo / "new dir" / "x.parquet"
    with pytest.raises(
        TransferError, match=r"^Refusing pull: remote file is missing: \S+:.*/new dir/x\.parquet\.$"
    ):
        run(fm, "pull", local)
    assert not (fm.local_repo / "new dir").exists()


def test_push_of_a_missing_local_file_is_refused(fm: FileSides) -> None:
    with pytest.raises(DatasetError, match=r"^Refusing push: local file is missing: "):
        run(fm, "push", fm.local_repo / "absent.parquet")
    assert list(fm.remote_repo.iterdir()) == []


def test_push_creates_remote_parents_and_pull_creates_local_parents(fm: FileSides) -> None:
    local = fm.local_repo / "a" / "b" / "c.parquet"
    data = write_table(local, 2)
    run(fm, "push", local)
    assert (fm.remote_repo / "a" / "b" / "c.parquet").read_bytes() == data
    local.unlink()
    (fm.local_repo / "a" / "b").rmdir()
    (fm.local_repo / "a").rmdir()
    run(fm, "pull", local)
    assert local.read_bytes() == data


def test_remote_path_outside_repo_root_with_missing_parents(fm: FileSides, tmp_path: Path) -> None:
    local = fm.local_repo / "x.parquet"
    data = write_table(local, 3)
    elsewhere = tmp_path / "scratch" / "deep" / "copy.parquet"
    res = run(fm, "push", local, remote_path=str(elsewhere))
    assert res.transfer_state == "TRANSFERRED" and elsewhere.read_bytes() == data
    assert run(fm, "diff", local, remote_path=str(elsewhere)).summary.has_change is False


# -- dry runs ---------------------------------------------------------------------------------


def test_dry_runs_write_nothing_anywhere(fm: FileSides) -> None:
    local = fm.local_repo / "fresh" / "x.parquet"
    write_table(local, 3)
    res = run(fm, "push", local, dry_run=True)
    assert res.transfer_state == "DRY-RUN" and res.summary.has_change
    assert list(fm.remote_repo.iterdir()) == []  # not even the parent dir
    pulled = fm.local_repo / "other" / "y.parquet"
    write_table(fm.remote_repo / "other" / "y.parquet", 2)
    res = run(fm, "pull", pulled, dry_run=True)
    assert res.transfer_state == "DRY-RUN"
    assert not (fm.local_repo / "other").exists()


# -- refusals ---------------------------------------------------------------------------------


def test_remote_symlink_is_refused_and_its_target_untouched(fm: FileSides, tmp_path: Path) -> None:
    local = fm.local_repo / REL
    write_table(local, 3)
    victim = tmp_path / "victim.parquet"
    original = write_table(victim, 1, tag="v")
    (fm.remote_repo / REL).parent.mkdir(parents=True)
    os.symlink(victim, fm.remote_repo / REL)
    for action in ("diff", "pull", "push"):
        with pytest.raises(TransferError, match=r"^Remote path is a symlink: .*scores\.parquet\. FILE mode"):
            run(fm, action, local)
    assert victim.read_bytes() == original
    assert os.path.islink(fm.remote_repo / REL)


def test_remote_fifo_and_directory_are_refused(fm: FileSides) -> None:
    local = fm.local_repo / "pipe.parquet"
    write_table(local, 1)
    os.mkfifo(fm.remote_repo / "pipe.parquet")
    with pytest.raises(TransferError, match=r"^Remote path is not a regular file: "):
        run(fm, "push", local)
    (fm.remote_repo / "dir.parquet").mkdir()
    write_table(fm.local_repo / "dir.parquet", 1)
    with pytest.raises(TransferError, match=r"^Remote path is a directory: "):
        run(fm, "pull", fm.local_repo / "dir.parquet")


def test_local_symlink_is_refused(fm: FileSides, tmp_path: Path) -> None:
    real = tmp_path / "real.parquet"
    write_table(real, 2)
    os.symlink(real, fm.local_repo / "link.parquet")
    write_table(fm.remote_repo / "link.parquet", 5)
    with pytest.raises(DatasetError, match=r"^Local path is a symlink: "):
        run(fm, "pull", fm.local_repo / "link.parquet")
    assert os.path.islink(fm.local_repo / "link.parquet")
    assert pq.read_metadata(real).num_rows == 2


def test_corrupted_temp_fails_post_push_file_and_keeps_old_remote(fm: FileSides) -> None:
    local, remote = fm.local_repo / REL, fm.remote_repo / REL
    write_table(local, 3)
    run(fm, "push", local)
    old = remote.read_bytes()
    write_table(local, 8, tag="new")
    faults: list[Faulty] = []

    def wrap(transport, target):
        faults.append(CorruptUploadedTemp(transport, target))
        return faults[0]

    with pytest.raises(VerificationError, match=r"^post-push-file: .*does not match") as info:
        run(fm, "push", local, transport_wrapper=wrap)
    assert faults[0].fired
    assert sha(local) in str(info.value)
    assert remote.read_bytes() == old
    assert temps(fm.remote_repo) == []


@pytest.mark.parametrize(("mode", "message"), [("hash", "SHA mismatch"), ("parquet", "row mismatch")])
def test_post_pull_file_mismatch_leaves_local_untouched(fm: FileSides, mode: str, message: str) -> None:
    local, remote = fm.local_repo / REL, fm.remote_repo / REL
    before = write_table(local, 3)
    write_table(remote, 6, tag="r")
    with pytest.raises(VerificationError, match=rf"^post-pull-file: {message} "):
        run(fm, "pull", local, verify=mode, transport_wrapper=ReplaceDownloadedRows)
    assert local.read_bytes() == before
    assert temps(fm.local_repo) == []


def test_dropped_download_resumes_from_the_partial(fm: FileSides, tmp_path: Path) -> None:
    local, remote = fm.local_repo / REL, fm.remote_repo / REL
    data = write_table(remote, 4000)
    with pytest.raises(TransferError, match="connection dropped"):
        run(fm, "pull", local, transport_wrapper=DropHalfWay)
    assert not local.exists()
    (partial,) = temps(fm.local_repo)
    assert partial.stat().st_size == len(data) // 2
    res = run(fm, "pull", local)
    assert res.transfer_state == "TRANSFERRED" and local.read_bytes() == data
    assert temps(fm.local_repo) == []
    sent = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    sent = [e for e in sent if e["event"] == "sync.file.sent"]
    assert sent[-1]["bytes"] == len(data) - len(data) // 2  # only the rest travelled


def test_file_inside_a_dataset_takes_no_lock_and_leaves_its_event_log(fm: FileSides) -> None:
    """single_file_transfers_do_not_append_to_an_adjacent_dataset_event_history (§14)."""
    ds = make_dataset(fm.local_repo / "usr", "densegen/demo")
    remote_ds = make_dataset(fm.remote_repo / "usr", "densegen/demo", rows=7)
    add_event(remote_ds, "import_rows", rows=4)
    local_log, remote_log = (ds / ".events.log").read_bytes(), (remote_ds / ".events.log").read_bytes()
    run(fm, "push", ds / "records.parquet")
    write_records(remote_ds / "records.parquet", 2, tag="f")
    run(fm, "pull", ds / "records.parquet")
    assert (ds / ".events.log").read_bytes() == local_log
    assert (remote_ds / ".events.log").read_bytes() == remote_log
    for side in (ds, remote_ds):
        assert sorted(p.name for p in side.iterdir() if p.name.startswith((".usr", ".events.lock"))) == []


# -- where the remote file is -----------------------------------------------------------------


def _resolve(fm: FileSides, raw: Path | str, *, environ: dict[str, str] | None = None, **kw):
    return filemode.resolve_file_target(str(raw), fm.remote, environ=environ or {}, **kw)


@LOCAL_ONLY
def test_remote_path_is_repo_root_plus_path_under_the_local_repo_root(fm: FileSides) -> None:
    target = _resolve(fm, fm.local_repo / REL)
    assert target.remote_path == str(fm.remote_repo / REL)
    assert target.remote.base_dir == str((fm.remote_repo / REL).parent) and target.name == "scores.parquet"
    assert target.where == f"local:{fm.remote_repo / REL}"


@LOCAL_ONLY
def test_local_repo_root_precedence(fm: FileSides, tmp_path: Path) -> None:
    other = tmp_path / "other"
    (other / "sub").mkdir(parents=True)
    raw = other / "sub" / "f.parquet"
    with pytest.raises(DatasetError):  # remote local_repo_root does not hold the file
        _resolve(fm, raw)
    assert _resolve(fm, raw, repo_root=str(other)).remote_path == str(fm.remote_repo / "sub" / "f.parquet")
    bare = RemoteConfig(name="hpc", type="local", base_dir="/unused", repo_root="/r")
    env = {"DNADESIGN_REPO_ROOT": str(other)}
    by_env = filemode.resolve_file_target(str(raw), bare, environ=env)
    assert by_env.remote_path == "/r/sub/f.parquet"
    flag = filemode.resolve_file_target(str(raw), bare, environ=env, repo_root=str(other / "sub"))
    assert flag.remote_path == "/r/f.parquet"  # --repo-root beats $DNADESIGN_REPO_ROOT


@LOCAL_ONLY
def test_remote_path_option_forms(fm: FileSides, tmp_path: Path) -> None:
    raw = tmp_path / "anywhere.parquet"  # --remote-path needs no local repo root
    assert _resolve(fm, raw, remote_path="/abs/dir/x.parquet").remote_path == "/abs/dir/x.parquet"
    assert _resolve(fm, raw, remote_path="rel/x.parquet").remote_path == f"{fm.remote_repo}/rel/x.parquet"
    assert _resolve(fm, raw, remote_path="~/x.parquet").remote.base_dir == "~"
    bare = RemoteConfig(name="hpc", type="local", base_dir="/unused")
    homed = filemode.resolve_file_target(str(raw), bare, remote_path="data/x.parquet", environ={})
    assert homed.remote_path == "~/data/x.parquet"


@LOCAL_ONLY
@pytest.mark.parametrize(
    ("remote_path", "message"),
    [
        ("/data/../etc/x.parquet", r"contains '\.\.'"),
        ("../x.parquet", r"contains '\.\.'"),
        ("/data/dir/", "does not name a file"),
        ("/", "does not name a file"),
        ("/data/x\nrm.parquet", "NUL, newline or backslash"),
    ],
)
def test_unsafe_remote_paths_are_refused(
    fm: FileSides, tmp_path: Path, remote_path: str, message: str
) -> None:
    with pytest.raises(TransferError, match=message):
        _resolve(fm, tmp_path / "x.parquet", remote_path=remote_path)


@LOCAL_ONLY
def test_public_error_messages(fm: FileSides, tmp_path: Path) -> None:
    no_root = RemoteConfig(name="hpc", type="local", base_dir="/unused")
    with pytest.raises(RemoteConfigError) as info:
        filemode.resolve_file_target(str(fm.local_repo / "x.parquet"), no_root, environ={})
    assert info.value.message == "FILE mode requires remote.repo_root in remotes.yaml or --remote-path."
    no_local = RemoteConfig(name="hpc", type="local", base_dir="/unused", repo_root="/r")
    with pytest.raises(RemoteConfigError) as info:
        filemode.resolve_file_target(str(fm.local_repo / "x.parquet"), no_local, environ={})
    assert info.value.message == (
        "FILE mode requires a local repo root. Pass --repo-root, set DNADESIGN_REPO_ROOT, "
        "or add local_repo_root in remotes.yaml."
    )
    outside = tmp_path / "outside.parquet"
    with pytest.raises(DatasetError) as info:
        _resolve(fm, outside)
    assert info.value.message == (
        f"Cannot compute path relative to local repo root: {outside} not under {fm.local_repo}"
    )
    (fm.local_repo / "folder.parquet").mkdir()
    with pytest.raises(DatasetError) as info:
        _resolve(fm, fm.local_repo / "folder.parquet")
    assert info.value.message == "FILE mode: pass a file path, not a directory."


def test_push_keeps_the_local_mtime(fm: FileSides) -> None:
    """FILE mode as rsync -t: the remote copy gets the local file's mtime (ns), local or ssh."""
    local, remote = fm.local_repo / REL, fm.remote_repo / REL
    write_table(local, 3)
    os.utime(local, ns=(1_767_225_600_123_456_789, 1_767_225_600_123_456_789))
    assert run(fm, "push", local).transfer_state == "TRANSFERRED"
    assert remote.stat().st_mtime_ns == 1_767_225_600_123_456_789


# -- payloads: a FILE-mode transfer never replaces a good file with junk --------------------------


@pytest.mark.parametrize("name", ["records.parquet", "scores.parquet", "meta.md"])
def test_invalid_payloads_are_refused_both_ways_and_both_files_stay(fm: FileSides, name: str) -> None:
    """junk (zero-filled) bytes named records.parquet, any .parquet or meta.md: refused before they
    replace the other side's file (`post-pull-payload`, `pre-push-payload`); both files stay."""
    rel = f"usr/densegen/demo/{name}"
    local, remote = fm.local_repo / rel, fm.remote_repo / rel
    for path in (local, remote):
        if name == "meta.md":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("name: demo\n")
        else:
            write_records(path, 3)
    good = local.read_bytes()
    remote.write_bytes(bytes(len(good) + 7))
    junk = remote.read_bytes()
    with pytest.raises(VerificationError, match=rf"^post-pull-payload: remote .*/{name} is not a valid "):
        run(fm, "pull", local)
    assert local.read_bytes() == good and remote.read_bytes() == junk
    assert [p.name for p in local.parent.iterdir()] == [name]  # the refused download is gone
    write_records(remote, 3) if name != "meta.md" else remote.write_text("name: demo\n")
    good_remote = remote.read_bytes()
    local.write_bytes(bytes(len(good) + 9))
    with pytest.raises(VerificationError, match=rf"^pre-push-payload: local .*/{name} is not a valid "):
        run(fm, "push", local)
    assert remote.read_bytes() == good_remote
    assert [p.name for p in remote.parent.iterdir()] == [name]


def test_a_wrong_schema_records_parquet_is_refused_but_any_other_parquet_table_travels(fm: FileSides) -> None:
    write_table(fm.local_repo / "usr/densegen/demo/records.parquet", 3)
    with pytest.raises(
        VerificationError, match=r"^pre-push-payload: .*lacks core column 'id' \(columns: c0, c1\)"
    ):
        run(fm, "push", fm.local_repo / "usr/densegen/demo/records.parquet")
    assert not (fm.remote_repo / "usr/densegen/demo/records.parquet").exists()
    data = write_table(fm.local_repo / REL, 3)  # not records.parquet: a complete parquet file is enough
    run(fm, "push", fm.local_repo / REL)
    assert (fm.remote_repo / REL).read_bytes() == data


def test_uploaded_file_is_validated_inside_apply(fm: FileSides, monkeypatch) -> None:
    """Were the local check skipped, the agent refuses the uploaded temp before its rename."""
    from usrbatch.sync import payload as pl

    write_records(fm.remote_repo / REL, 3)
    before = (fm.remote_repo / REL).read_bytes()
    (fm.local_repo / REL).parent.mkdir(parents=True)
    (fm.local_repo / REL).write_bytes(b"PAR1" + b"junk" * 50 + b"PAR1")
    monkeypatch.setattr(pl, "check_file_local", lambda *a, **k: None)
    with pytest.raises(VerificationError, match=r"^post-push-payload: the uploaded copy of scores\.parquet"):
        run(fm, "push", fm.local_repo / REL)
    assert (fm.remote_repo / REL).read_bytes() == before
    assert [p.name for p in (fm.remote_repo / REL).parent.iterdir()] == ["scores.parquet"]
