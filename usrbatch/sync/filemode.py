"""FILE mode (§6): diff, pull and push of ONE file between this machine and a remote path.

Why ~400 lines in one module: FILE mode's observe and transfer steps for diff, pull and push
(no lease, journal or sidecars) are one small pipeline whose guarantees below read in one place.

The remote path is `--remote-path`, else `remote.repo_root` + the local file's path relative to the
local repo root (`--repo-root` > `remote.local_repo_root` > `$DNADESIGN_REPO_ROOT`). The transport
is rooted at the remote file's parent directory, so every remote operation names one validated
relative path (the file, or its temp name beside it).

Guarantees (better than the public tool, which always transfers):
* no locks, no event log, no sidecar checks; `--verify hash|size|parquet|auto` as for the primary;
* both sides are hashed (through the agent's hash cache), and equal sha256 means "Already up to
  date." with no transfer;
* pull downloads to a temp file beside the target (resumed after a dropped connection), checks it
  against the remote stat (`post-pull-file`), then fsync + atomic rename; the old file is kept
  whole until then;
* push uploads to a temp name beside the remote target, then ONE `apply` checks the temp's remote
  sha256 and renames it into place (a mismatch renames nothing: `post-push-file`), then the
  remote file is re-statted and verified (`post-push-file`);
* a dry run writes nothing anywhere (no parent dirs either);
* remote paths: no `..`, absolute only as the configured repo_root or the given `--remote-path`;
  a symlink, directory or special file at either end is refused.
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from usrbatch.agent import remote as agent
from usrbatch.auditlog import get_logger
from usrbatch.errors import DatasetError, RemoteConfigError, TransferError, VerificationError
from usrbatch.files import fsync_dir, fsync_file, make_parents, prune_empty
from usrbatch.remotes import RemoteConfig
from usrbatch.sync import payload as pl
from usrbatch.sync.plan import DiffSummary, PrimaryStat, SnapshotInfo
from usrbatch.sync.result import Meter, PlanHook, ProgressFactory, SyncResult, finish, primary_of_file
from usrbatch.sync.temps import cleanup_remote, download_partial, drop_stale_partials, upload_temp
from usrbatch.sync.verify import local_parquet_shape, resolve_verify_mode, verify_primary
from usrbatch.transport.base import FileStat, Transfer, Transport

LOCAL_ROOT_ENV = "DNADESIGN_REPO_ROOT"
NO_REMOTE_ROOT = "FILE mode requires remote.repo_root in remotes.yaml or --remote-path."
NO_LOCAL_ROOT = (
    "FILE mode requires a local repo root. Pass --repo-root, set DNADESIGN_REPO_ROOT, "
    "or add local_repo_root in remotes.yaml."
)
NOT_A_FILE = "FILE mode: pass a file path, not a directory."


@dataclass(frozen=True)
class FileTarget:
    """One local file and where it lives on a remote. `remote` is the configured remote with
    base_dir set to the remote file's parent directory; `name` is the file's name in it."""

    local: Path
    remote: RemoteConfig
    name: str

    @property
    def remote_path(self) -> str:
        return posixpath.join(self.remote.base_dir, self.name)

    @property
    def where(self) -> str:
        """`user@host:/path/file` or `local:/path/file`, for messages."""
        return f"{self.remote.target}:{self.remote_path}"


# -- target resolution -----------------------------------------------------------------------


def local_file_path(raw: str) -> Path:
    """The absolute local path of a FILE-mode target: its directories resolved, the file itself
    not followed (a symlinked file is refused later). A directory is refused."""
    path = Path(raw).expanduser().absolute()
    if path.is_dir():
        raise DatasetError(NOT_A_FILE, hint="A dataset directory or id selects dataset mode.")
    return path.parent.resolve() / path.name


def _check_remote_path(text: str, *, given: str) -> tuple[str, str]:
    """(parent, name) of an absolute or `~/`-relative remote file path; UsrError otherwise."""
    if any(c in text for c in ("\x00", "\n", "\r", "\\")):
        raise TransferError(f"Remote file path {given!r} contains a NUL, newline or backslash.")
    if ".." in text.split("/"):
        raise TransferError(
            f"Remote file path {given!r} contains '..'.",
            hint="Name the remote file without '..' (an absolute path, or relative to remote.repo_root).",
        )
    if not (text.startswith("/") or text.startswith("~/")):
        raise TransferError(f"Remote file path {given!r} is not absolute.")
    norm = str(PurePosixPath(text))
    parent, name = posixpath.split(norm)
    if text.endswith("/") or name in ("", ".", "~") or not parent:
        raise TransferError(
            f"Remote file path {given!r} does not name a file.",
            hint="Pass the remote file's full path, e.g. --remote-path /project/me/repo/data/x.parquet.",
        )
    return parent, name


def _anchored(path: str) -> str:
    """Absolute and `~` paths as given; anything else is relative to the remote home."""
    if path.startswith("/") or path == "~" or path.startswith("~/"):
        return path
    return f"~/{path}"


def remote_file_path(
    local: Path,
    remote: RemoteConfig,
    *,
    remote_path: str | None = None,
    repo_root: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> str:
    """The remote path of `local` (see the module doc); UsrError with the public messages."""
    if remote_path:
        text = remote_path.strip()
        if not (text.startswith("/") or text.startswith("~")):
            text = posixpath.join(_anchored(remote.repo_root), text) if remote.repo_root else _anchored(text)
        return text
    if not remote.repo_root:
        raise RemoteConfigError(
            NO_REMOTE_ROOT,
            hint=f"Add `repo_root: /path/to/repo` under remote '{remote.name}', or pass --remote-path PATH.",
        )
    env = os.environ if environ is None else environ
    local_root = repo_root or remote.local_repo_root or env.get(LOCAL_ROOT_ENV, "").strip()
    if not local_root:
        raise RemoteConfigError(NO_LOCAL_ROOT)
    root = Path(local_root).expanduser().resolve()
    try:
        rel = local.relative_to(root)
    except ValueError:
        raise DatasetError(
            f"Cannot compute path relative to local repo root: {local} not under {local_root}",
            hint="Pass --repo-root <dir containing the file>, or --remote-path PATH.",
        ) from None
    return posixpath.join(_anchored(remote.repo_root), rel.as_posix())


def resolve_file_target(
    raw: str,
    remote: RemoteConfig,
    *,
    remote_path: str | None = None,
    repo_root: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> FileTarget:
    """The FileTarget of a CLI target in FILE mode (nothing is touched on either side)."""
    local = local_file_path(raw)
    text = remote_file_path(local, remote, remote_path=remote_path, repo_root=repo_root, environ=environ)
    parent, name = _check_remote_path(text, given=remote_path or text)
    return FileTarget(local=local, remote=dataclasses.replace(remote, base_dir=parent), name=name)


# -- observation -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FileObservation:
    """Both sides as stat'ed now, and the public DiffSummary built from them."""

    local: FileStat
    remote: FileStat
    summary: DiffSummary

    @property
    def has_change(self) -> bool:
        return self.summary.has_change


def _refuse_kind(st: FileStat, *, side: str, where: str) -> None:
    if st.kind in ("file", "missing"):
        return
    what = {"symlink": "a symlink", "directory": "a directory", "special": "not a regular file"}[st.kind]
    error = DatasetError if side == "Local" else TransferError
    raise error(
        f"{side} path is {what}: {where}. FILE mode transfers regular files only and never follows symlinks.",
        hint="Point the target (or --remote-path / remote.repo_root) at the real file.",
    )


def stat_local(path: Path, *, parquet_stats: bool = False) -> FileStat:
    """The local file as the agent sees it (hash cache of its directory; no link followed)."""
    try:
        data = agent.stat_path(str(path.parent), path.name, True, False)
    except agent.AgentError as exc:
        raise DatasetError(f"Cannot stat local file {path}: {exc}") from None
    except OSError as exc:
        raise DatasetError(f"Cannot read local file {path}: {exc.strerror or exc}") from None
    st = FileStat.from_agent(data)
    if parquet_stats and st.kind == "file":
        st = dataclasses.replace(st, shape=local_parquet_shape(path))
    return st


def observe(target: FileTarget, transport: Transport, verify: str, action: str) -> FileObservation:
    """Stat both sides (one remote round trip), refuse links and special files, resolve the
    verify mode and build the summary (`has_change` = the sha256 differ or a side is missing)."""
    parquet = verify == "parquet"
    remote = transport.stat_file(target.name, hashes=True, parquet_stats=parquet)
    _refuse_kind(remote, side="Remote", where=target.where)
    local = stat_local(target.local)
    _refuse_kind(local, side="Local", where=str(target.local))
    mode, notes = resolve_verify_mode(verify, primary_of_file(remote))
    if mode == "parquet" and local.kind == "file":
        local = dataclasses.replace(local, shape=local_parquet_shape(target.local))
    same = local.exists and remote.exists and local.sha256 is not None and local.sha256 == remote.sha256
    summary = DiffSummary(
        dataset=str(target.local),
        primary_local=primary_of_file(local),
        primary_remote=primary_of_file(remote),
        meta_local_mtime=None,
        meta_remote_mtime=None,
        events_local_lines=0,
        events_remote_lines=0,
        snapshots=SnapshotInfo(count=0, newest_ts=None, newer_than_local=0),
        derived_local_files=[],
        derived_remote_files=[],
        aux_local_files=[],
        aux_remote_files=[],
        has_change=not same,
        changes={"primary_sha_diff": not same},
        verify_mode=mode,
        verify_notes=notes,
    )
    source = local if action == "push" else remote
    sending = not same and source.exists and action != "diff"
    get_logger().info(
        "sync.plan",
        dataset=str(target.local),
        action=action,
        mode="file",
        remote=target.where,
        files_to_send=int(sending),
        files_to_delete=0,
        bytes=(source.size or 0) if sending else 0,
        has_change=not same,
        local_hashed_bytes=local.hashed_bytes,
        remote_hashed_bytes=remote.hashed_bytes,
    )
    return FileObservation(local, remote, summary)


def _done(
    action: str, target: FileTarget, obs: FileObservation, dry_run: bool, started: float, **kw
) -> SyncResult:
    return finish(action, str(target.local), obs.summary, dry_run=dry_run, started=started, **kw)


# -- diff ------------------------------------------------------------------------------------


def diff_file(target: FileTarget, transport: Transport, *, verify: str = "hash") -> SyncResult:
    """Compare the two files without writing anything (`DIFF-ONLY`)."""
    started = time.monotonic()
    obs = observe(target, transport, verify, "diff")
    return _done("diff", target, obs, False, started)


# -- pull ------------------------------------------------------------------------------------


def _staged_stat(path: Path, mode: str) -> PrimaryStat:
    """The downloaded temp file as post-pull-file compares it (read back from disk)."""
    st = os.lstat(path)
    shape = local_parquet_shape(path) if mode == "parquet" else (None, None)
    sha = agent.sha256_file(str(path))
    return PrimaryStat(True, st.st_size, sha, shape[0], shape[1], str(st.st_mtime_ns // 1_000_000_000))


def pull_file(
    target: FileTarget,
    transport: Transport,
    *,
    verify: str = "hash",
    dry_run: bool = False,
    progress: ProgressFactory | None = None,
    on_plan: PlanHook | None = None,
) -> SyncResult:
    """Make the local file equal to the remote one.

    Raises TransferError when the remote file is missing (or the transfer fails; a partial
    download is kept and resumed by the next pull), VerificationError `post-pull-file: ...`
    when the downloaded bytes do not match the remote stat. The local file is replaced only by a
    verified, fsynced temp (atomic rename); on any failure it is as it was.
    """
    started = time.monotonic()
    obs = observe(target, transport, verify, "pull")
    if not obs.remote.exists:
        raise TransferError(
            f"Refusing pull: remote file is missing: {target.where}.",
            hint="Check --remote-path, or remote.repo_root and the local repo root it is relative to.",
        )
    if on_plan is not None:
        on_plan(obs.summary)
    if not obs.has_change or dry_run:
        return _done("pull", target, obs, dry_run, started)

    remote, mode = obs.remote, obs.summary.verify_mode
    assert remote.sha256 is not None and remote.size is not None  # stat_file(hashes=True) of a file
    created = make_parents(target.local.parent)
    partial = download_partial(target.local, remote.sha256)
    meter = Meter(progress(remote.size) if progress else None)
    item = Transfer(remote=target.name, local=partial, size=remote.size, sha256=remote.sha256)
    keep_partial = False
    try:
        try:
            transport.download([item], progress=meter)
        except VerificationError:
            raise
        except BaseException:
            keep_partial = partial.is_file()  # a dropped transfer: the next pull resumes it
            raise
        meter.log(str(target.local), [item], {item.remote: str(target.local)})
        staged = _staged_stat(partial, mode)
        verify_primary("post-pull-file", mode, staged, primary_of_file(remote))
        pl.check_file_staged(partial, target.name, target.where)  # post-pull-payload
        if remote.mtime_ns is not None:
            os.utime(partial, ns=(remote.mtime_ns, remote.mtime_ns))  # keep the remote mtime
        fsync_file(partial)
        os.replace(partial, target.local)
        fsync_dir(target.local.parent)
    except BaseException:
        if not keep_partial:
            partial.unlink(missing_ok=True)
            if created:
                prune_empty(created[-1], created[0].parent)
        raise
    drop_stale_partials(target.local, partial)
    st = os.lstat(target.local)
    key = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
    agent.remember_hashes(str(target.local.parent), {target.local.name: [*key, remote.sha256]})
    get_logger().info("sync.verified", dataset=str(target.local), context="post-pull-file", files=1)
    return _done("pull", target, obs, False, started, files_sent=1, bytes_sent=remote.size, locked=False)


# -- push ------------------------------------------------------------------------------------


def push_file(
    target: FileTarget,
    transport: Transport,
    *,
    verify: str = "hash",
    dry_run: bool = False,
    progress: ProgressFactory | None = None,
    on_plan: PlanHook | None = None,
) -> SyncResult:
    """Make the remote file equal to the local one.

    Raises DatasetError when the local file is missing, VerificationError `post-push-file: ...`
    when the uploaded temp does not hash to the local sha256 (nothing renamed; the remote file
    is as it was) or the re-statted remote file does not verify, TransferError for transport
    failures (the temp upload is removed).
    """
    started = time.monotonic()
    obs = observe(target, transport, verify, "push")
    if not obs.local.exists:
        raise DatasetError(f"Refusing push: local file is missing: {target.local}.")
    if on_plan is not None:
        on_plan(obs.summary)
    if not obs.has_change or dry_run:
        return _done("push", target, obs, dry_run, started)

    local, mode = obs.local, obs.summary.verify_mode
    assert local.sha256 is not None and local.size is not None
    pl.check_file_local(target.local)  # pre-push-payload
    temp = upload_temp(target.name, local.sha256)  # by content: a dropped push resumes it
    meter = Meter(progress(local.size) if progress else None)
    upload = Transfer(remote=temp, local=target.local, size=local.size, sha256=local.sha256)
    try:
        transport.upload([upload], progress=meter)
    except BaseException:
        cleanup_remote(transport, [temp])
        raise
    meter.log(str(target.local), [upload], {temp: str(target.local)})
    try:
        # ONE round trip: the temp's remote sha256 is checked, then it is renamed over the target.
        kind = agent.file_payload_kind(target.name)
        transport.apply(
            [(temp, target.name)], [], verify={temp: local.sha256}, payload={temp: kind} if kind else None
        )
    except VerificationError as exc:  # the temp was removed and nothing renamed
        if exc.message.startswith(pl.REMOTE_CONTEXT):
            raise
        raise VerificationError(f"post-push-file: {exc.message}") from None
    except BaseException:
        cleanup_remote(transport, [temp])
        raise
    after = transport.stat_file(target.name, hashes=mode == "hash", parquet_stats=mode == "parquet")
    verify_primary("post-push-file", mode, obs.summary.primary_local, primary_of_file(after))
    get_logger().info("sync.verified", dataset=str(target.local), context="post-push-file", files=1)
    return _done("push", target, obs, False, started, files_sent=1, bytes_sent=local.size, locked=False)
