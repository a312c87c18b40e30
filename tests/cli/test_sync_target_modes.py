"""`usr diff|status|pull|push` target modes through the real CLI (run_cli) against a `local`
remote: FILE mode (a `.parquet` or existing file) versus dataset ids and dataset dirs, the
FILE-mode options (--repo-root, --remote-path), its flag policy, output and audit JSON (§6, §10)."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sync"))
from builders import make_dataset, tree  # noqa: E402

from usrbatch import auditlog  # noqa: E402
from usrbatch.cli.common import run_cli  # noqa: E402
from usrbatch.cli.usr_main import usr  # noqa: E402

DS = "densegen/demo"


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("USRBATCH_AUDIT_LOG", raising=False)
    monkeypatch.delenv("DNADESIGN_REPO_ROOT", raising=False)
    paths = {name: tmp_path / name for name in ("usr", "hpc", "repo", "hpc repo")}
    for path in paths.values():
        path.mkdir()
    cfg = tmp_path / "remotes.yaml"
    cfg.write_text(
        "remotes:\n"
        f"  hpc:\n    type: local\n    base_dir: {paths['hpc']}\n"
        f"    repo_root: {paths['hpc repo']}\n    local_repo_root: {paths['repo']}\n"
        f"  bare:\n    type: local\n    base_dir: {paths['hpc']}\n"
        f"  rootonly:\n    type: local\n    base_dir: {paths['hpc']}\n    repo_root: {paths['hpc repo']}\n"
    )
    yield {**paths, "cfg": cfg, "tmp": tmp_path}
    auditlog.configure(None)


def run(env, capsys, monkeypatch, *args, stdin: str = ""):
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = run_cli(usr, ["--root", str(env["usr"]), "--remotes-config", str(env["cfg"]), *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def write_table(path: Path, rows: int, tag: str = "a") -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": [f"{tag}{i}" for i in range(rows)], "x": list(range(rows))}), path)
    return path.read_bytes()


def test_records_parquet_is_file_mode_while_the_id_is_dataset_mode(env, capsys, monkeypatch):
    """`records.parquet` of a dataset is one file (remote path under repo_root), the id is the
    dataset (remote path under base_dir)."""
    ds = make_dataset(env["repo"] / "usr_datasets", DS)
    make_dataset(env["usr"], DS)
    code, out, _ = run(env, capsys, monkeypatch, "push", str(ds / "records.parquet"), "hpc", "-y")
    assert code == 0, out
    assert f"Dataset    : {ds / 'records.parquet'}" in out.splitlines()
    assert sorted(tree(env["hpc repo"])) == ["usr_datasets/densegen/demo/records.parquet"]
    assert list(env["hpc"].iterdir()) == []
    code, out, _ = run(env, capsys, monkeypatch, "push", DS, "hpc", "-y")
    assert code == 0, out
    assert "Verify     : primary=hash sidecars=strict content_hashes=on" in out
    assert tree(env["hpc"] / DS) == tree(env["usr"] / DS)


def test_file_mode_defaults_and_audit_json(env, capsys, monkeypatch):
    local = env["repo"] / "outputs" / "scores.parquet"
    write_table(local, 4)
    audit_path = env["tmp"] / "audit" / "file-push.json"
    code, out, _ = run(
        env, capsys, monkeypatch, "push", str(local), "hpc", "-y", "--audit-json-out", str(audit_path)
    )
    assert code == 0, out
    lines = out.splitlines()
    start = lines.index("PUSH audit: TRANSFERRED")
    assert lines[start : start + 4] == [
        "PUSH audit: TRANSFERRED",
        f"Dataset    : {local}",
        "Verify     : primary=hash sidecars=off content_hashes=off",
        "Primary    : changed",
    ]
    assert lines[-1] == "Push complete."
    data = json.loads(audit_path.read_text())
    assert data == {
        "usr_output_version": 1,
        "data": {
            "action": "push",
            "transfer_state": "TRANSFERRED",
            "dataset": str(local),
            "verify": {"primary": "hash", "sidecars": "off", "content_hashes": "off"},
            "primary": {"changed": True},
            "meta": {"changed": False},
            ".events.log": {"changed": False, "local": 0, "remote": 0},
            "_snapshots": {"changed": False, "remote_count": 0, "newer_than_local": 0},
            "_derived": {
                "changed": False,
                "local_files": 0,
                "remote_files": 0,
                "local_only": [],
                "remote_only": [],
            },
            "_auxiliary": {
                "changed": False,
                "local_files": 0,
                "remote_files": 0,
                "local_only": [],
                "remote_only": [],
            },
        },
    }
    assert (env["hpc repo"] / "outputs" / "scores.parquet").read_bytes() == local.read_bytes()


def test_file_mode_diff_json_and_noop_pull(env, capsys, monkeypatch):
    local = env["repo"] / "a.parquet"
    write_table(local, 3)
    run(env, capsys, monkeypatch, "push", str(local), "hpc", "-y")
    code, out, _ = run(env, capsys, monkeypatch, "diff", str(local), "hpc", "--format", "json")
    assert code == 0
    doc = json.loads(out)["data"]
    assert doc["dataset"] == str(local) and doc["has_change"] is False
    assert doc["primary_local"]["sha256"] == doc["primary_remote"]["sha256"]
    code, out, _ = run(env, capsys, monkeypatch, "pull", str(local), "hpc")
    assert code == 0
    assert "Already up to date." in out.splitlines() and "PULL audit: NO-OP" in out
    assert "Changes detected. Proceed with overwrite?" not in out


@pytest.mark.parametrize(
    "flag",
    [
        "--primary-only",
        "--skip-snapshots",
        "--verify-sidecars",
        "--no-verify-sidecars",
        "--verify-derived-hashes",
        "--no-verify-derived-hashes",
    ],
)
@pytest.mark.parametrize("action", ["pull", "push"])
def test_file_mode_rejects_dataset_only_flags(env, capsys, monkeypatch, flag, action):
    local = env["repo"] / "a.parquet"
    write_table(local, 3)
    code, out, _ = run(env, capsys, monkeypatch, action, str(local), "hpc", "-y", flag)
    assert code == 2
    assert out.splitlines()[0] == f"ERROR: {flag} is a dataset-only flag (not valid in FILE mode)."
    assert list(env["hpc repo"].iterdir()) == []


def test_several_dataset_only_flags_are_named_together(env, capsys, monkeypatch):
    local = env["repo"] / "a.parquet"
    write_table(local, 3)
    code, out, _ = run(
        env, capsys, monkeypatch, "push", str(local), "hpc", "--primary-only", "--no-verify-sidecars"
    )
    assert code == 2
    assert out.startswith(
        "ERROR: --primary-only/--no-verify-sidecars are dataset-only flags (not valid in FILE mode)."
    )


def test_prompt_n_aborts_a_file_pull_with_130(env, capsys, monkeypatch):
    local = env["repo"] / "a.parquet"
    before = write_table(local, 3)
    write_table(env["hpc repo"] / "a.parquet", 5, tag="r")
    code, out, _ = run(env, capsys, monkeypatch, "pull", str(local), "hpc", stdin="n\n")
    assert code == 130
    assert "Changes detected. Proceed with overwrite?" in out
    assert local.read_bytes() == before


def test_file_dry_run_changes_nothing_and_prints_no_completion(env, capsys, monkeypatch):
    local = env["repo"] / "new" / "deep" / "a.parquet"
    write_table(env["hpc repo"] / "new" / "deep" / "a.parquet", 2)
    code, out, _ = run(env, capsys, monkeypatch, "pull", str(local), "hpc", "--dry-run")
    assert code == 0
    assert "PULL audit: DRY-RUN" in out and "Pull complete." not in out
    assert not (env["repo"] / "new").exists()


def test_remote_path_and_repo_root_options(env, capsys, monkeypatch, tmp_path):
    elsewhere = tmp_path / "work" / "sub" / "x.parquet"
    data = write_table(elsewhere, 2)
    code, out, _ = run(
        env, capsys, monkeypatch, "push", str(elsewhere), "hpc", "-y", "--repo-root", str(tmp_path / "work")
    )
    assert code == 0, out
    assert (env["hpc repo"] / "sub" / "x.parquet").read_bytes() == data
    target = tmp_path / "scratch" / "copy.parquet"
    code, out, _ = run(
        env, capsys, monkeypatch, "push", str(elsewhere), "bare", "-y", "--remote-path", str(target)
    )
    assert code == 0, out
    assert target.read_bytes() == data
    monkeypatch.setenv("DNADESIGN_REPO_ROOT", str(tmp_path / "work"))
    code, out, _ = run(env, capsys, monkeypatch, "status", str(elsewhere), "rootonly")
    assert code == 0 and "Status     : up-to-date" in out.splitlines()


def test_public_error_messages_exit_2(env, capsys, monkeypatch, tmp_path):
    local = env["repo"] / "a.parquet"
    write_table(local, 1)
    code, out, _ = run(env, capsys, monkeypatch, "diff", str(local), "bare")
    assert code == 2
    assert (
        out.splitlines()[0] == "ERROR: FILE mode requires remote.repo_root in remotes.yaml or --remote-path."
    )
    code, out, _ = run(env, capsys, monkeypatch, "pull", str(local), "rootonly")
    assert code == 2
    assert out.splitlines()[0] == (
        "ERROR: FILE mode requires a local repo root. Pass --repo-root, set DNADESIGN_REPO_ROOT, "
        "or add local_repo_root in remotes.yaml."
    )
    outside = tmp_path / "outside.parquet"
    write_table(outside, 1)
    code, out, _ = run(env, capsys, monkeypatch, "push", str(outside), "hpc")
    assert code == 2
    assert out.splitlines()[0] == (
        f"ERROR: Cannot compute path relative to local repo root: {outside} not under {env['repo']}"
    )
    (env["repo"] / "folder.parquet").mkdir()
    code, out, _ = run(env, capsys, monkeypatch, "push", str(env["repo"] / "folder.parquet"), "hpc")
    assert code == 2
    assert out.splitlines()[0] == "ERROR: FILE mode: pass a file path, not a directory."
    assert list(env["hpc repo"].iterdir()) == []


def test_file_options_are_noted_and_ignored_for_datasets(env, capsys, monkeypatch):
    make_dataset(env["hpc"], DS)
    code, out, err = run(env, capsys, monkeypatch, "pull", DS, "hpc", "-y", "--remote-path", "/x/y.parquet")
    assert code == 0, out
    assert "NOTE: --remote-path applies to FILE mode only; ignored for dataset 'densegen/demo'." in err
    assert tree(env["usr"] / DS) == tree(env["hpc"] / DS)


@pytest.mark.parametrize("action", ["diff", "pull", "push"])
def test_a_stray_file_named_like_the_dataset_is_refused_not_overwritten(env, capsys, monkeypatch, action):
    make_dataset(env["usr"], DS)
    work = env["tmp"] / "work"
    work.mkdir()
    (work / "demo").write_bytes(b"the user's own file")
    monkeypatch.chdir(work)
    code, out, err = run(env, capsys, monkeypatch, action, "demo", "hpc", "-y")
    assert code == 2
    lines = out.splitlines()
    assert lines[0] == (
        "ERROR: Target 'demo' is ambiguous: ./demo is a file in the working directory, and 'demo' is "
        f"also the dataset {DS} under {env['usr']}."
    )
    assert lines[1].startswith("Hint: Pass './demo' to sync the path") and len(lines) == 2
    assert "Traceback" not in out + err
    assert (work / "demo").read_bytes() == b"the user's own file"
    assert list(env["hpc"].iterdir()) == [] and list(env["hpc repo"].iterdir()) == []
    code, out, _ = run(env, capsys, monkeypatch, "diff", str(env["usr"] / DS), "hpc")
    assert code == 0, out  # the dataset directory is the explicit choice of the dataset
