"""`usr diff|status|pull|push` through the real CLI entry point (run_cli) against a `local` remote."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sync"))
from builders import add_event, make_dataset, snapshot_all, tree, write_part, write_records  # noqa: E402

from usrbatch import auditlog  # noqa: E402
from usrbatch.cli.common import run_cli  # noqa: E402
from usrbatch.cli.usr_main import usr  # noqa: E402

DS = "densegen/demo"


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("USRBATCH_AUDIT_LOG", raising=False)
    local = tmp_path / "local"
    remote = tmp_path / "remote"
    local.mkdir()
    remote.mkdir()
    cfg = tmp_path / "remotes.yaml"
    cfg.write_text(f"remotes:\n  hpc:\n    type: local\n    base_dir: {remote}\n")
    yield {"local": local, "remote": remote, "cfg": cfg, "tmp": tmp_path}
    auditlog.configure(None)


def run(env, capsys, monkeypatch, *args, stdin: str = ""):
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = run_cli(usr, ["--root", str(env["local"]), "--remotes-config", str(env["cfg"]), *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_bootstrap_pull_then_push_roundtrip(env, capsys, monkeypatch):
    make_dataset(env["remote"], DS)
    code, out, _ = run(env, capsys, monkeypatch, "pull", DS, "hpc", "-y")
    assert code == 0, out
    assert "PULL audit: TRANSFERRED" in out
    assert out.rstrip().endswith("Pull complete.")
    local = env["local"] / DS
    write_part(local, "infer")
    add_event(local, "write_overlay_part", namespace="infer")
    code, out, _ = run(env, capsys, monkeypatch, "push", DS, "hpc", "-y")
    assert code == 0, out
    assert "PUSH audit: TRANSFERRED" in out
    assert tree(local) == tree(env["remote"] / DS)
    code, out, _ = run(env, capsys, monkeypatch, "diff", DS, "hpc")
    assert code == 0
    assert "Status     : up-to-date" in out.splitlines()


def test_noop_pull_prints_already_up_to_date(env, capsys, monkeypatch):
    make_dataset(env["remote"], DS)
    run(env, capsys, monkeypatch, "pull", DS, "hpc", "-y")
    code, out, _ = run(env, capsys, monkeypatch, "pull", DS, "hpc")
    assert code == 0
    lines = out.splitlines()
    assert "Already up to date." in lines
    assert "PULL audit: NO-OP" in lines
    assert "Changes detected. Proceed with overwrite?" not in lines


def test_exact_plain_diff_layout(env, capsys, monkeypatch):
    remote = make_dataset(env["remote"], DS)
    run(env, capsys, monkeypatch, "pull", DS, "hpc", "-y")
    add_event(remote, "import_rows", rows=1)
    write_part(remote, "densegen")
    local_rec = env["local"] / DS / "records.parquet"
    sha = __import__("hashlib").sha256(local_rec.read_bytes()).hexdigest()
    size = local_rec.stat().st_size
    meta_mtime = int((remote / "meta.md").stat().st_mtime)
    code, out, _ = run(env, capsys, monkeypatch, "diff", DS, "hpc", "--format", "plain")
    assert code == 0
    kb = f"{size / 1024:.0f}KB" if size >= 1024 else f"{size}B"
    assert out.splitlines() == [
        "Dataset: densegen/demo",
        f"Local  : {sha}  size={kb}  rows=?  cols=?",
        f"Remote : {sha}  size={kb}  rows=?  cols=?",
        f"Primary sha: {sha} == {sha}",
        f"meta.md     mtime: {meta_mtime}  →  {meta_mtime}",
        ".events.log changed lines: local=2  remote=3  (+1 on remote)",
        "_snapshots : remote_count=1  newer_than_local=0",
        "_derived   : changed  local_files=1  remote_files=2",
        "_auxiliary : unchanged  local_files=2  remote_files=2",
        "Status     : CHANGES",
        "Verify     : hash",
    ]


def _public_example(env):
    """The §10 example: events 2→4, one newer remote snapshot (3 total), a remote-only part."""
    remote = make_dataset(env["remote"], DS)
    local = make_dataset(env["local"], DS)
    (local / "_registry" / "registry.abc.yaml").unlink()
    (remote / "_registry" / "registry.abc.yaml").unlink()
    for d in (local, remote):  # same overlay and aux bytes on both sides
        for p in (d / "_derived" / "densegen").iterdir():
            p.unlink()
        write_records(d / "_derived" / "densegen" / "part-001.parquet", 2)
        (d / "meta.md").write_text("# same\n")
        os.utime(d / "meta.md", (1767225600, 1767225600))
    (remote / ".events.log").write_bytes((local / ".events.log").read_bytes())
    add_event(remote, "import_rows", rows=1)
    add_event(remote, "import_rows", rows=2)
    write_records(remote / "_snapshots" / "records-20260102T000000000001.parquet", 3)
    write_records(remote / "_snapshots" / "records-20251231T000000000001.parquet", 3)
    write_records(remote / "_derived" / "densegen" / "part-002.parquet", 2)
    write_records(remote / "records.parquet", 9, tag="r")
    return local, remote


EXPECTED_DATA = {
    "action": "pull",
    "transfer_state": "TRANSFERRED",
    "dataset": DS,
    "verify": {"primary": "hash", "sidecars": "strict", "content_hashes": "on"},
    "primary": {"changed": True},
    "meta": {"changed": False},
    ".events.log": {"changed": True, "local": 2, "remote": 4},
    "_snapshots": {"changed": True, "remote_count": 3, "newer_than_local": 1},
    "_derived": {
        "changed": True,
        "local_files": 1,
        "remote_files": 2,
        "local_only": [],
        "remote_only": ["densegen/part-002.parquet"],
    },
    "_auxiliary": {
        "changed": False,
        "local_files": 1,
        "remote_files": 1,
        "local_only": [],
        "remote_only": [],
    },
}


def test_pull_audit_json_and_printed_audit_match_the_contract(env, capsys, monkeypatch):
    _public_example(env)
    out_path = env["tmp"] / "audit" / "deep" / "pull.json"
    code, out, _ = run(env, capsys, monkeypatch, "pull", DS, "hpc", "-y", "--audit-json-out", str(out_path))
    assert code == 0, out
    text = out_path.read_text()
    assert text.endswith("\n") and "\n" not in text[:-1]
    assert json.loads(text) == {"usr_output_version": 1, "data": EXPECTED_DATA}
    assert list(json.loads(text)["data"]) == list(EXPECTED_DATA)
    lines = out.splitlines()
    start = lines.index("PULL audit: TRANSFERRED")
    assert lines[start : start + 9] == [
        "PULL audit: TRANSFERRED",
        "Dataset    : densegen/demo",
        "Verify     : primary=hash sidecars=strict content_hashes=on",
        "Primary    : changed",
        "meta.md    : unchanged",
        ".events.log: local=2  remote=4",
        "_snapshots : changed  remote_count=3  newer_than_local=1",
        "_derived   : changed  local_files=1  remote_files=2  local_only=0  remote_only=1",
        "_auxiliary : unchanged  local_files=1  remote_files=1  local_only=0  remote_only=0",
    ]
    assert lines[-1] == "Pull complete."


def test_diff_audit_json_is_diff_only_with_checks_off(env, capsys, monkeypatch):
    _public_example(env)
    out_path = env["tmp"] / "diff.json"
    code, _out, _ = run(env, capsys, monkeypatch, "diff", DS, "hpc", "--audit-json-out", str(out_path))
    assert code == 0
    data = json.loads(out_path.read_text())["data"]
    expected = dict(EXPECTED_DATA, action="diff", transfer_state="DIFF-ONLY")
    expected["verify"] = {"primary": "hash", "sidecars": "off", "content_hashes": "off"}
    assert data == expected


def test_push_audit_json_dry_run_and_noop(env, capsys, monkeypatch):
    make_dataset(env["local"], DS)
    out_path = env["tmp"] / "push.json"
    before = snapshot_all(env["remote"])
    code, out, _ = run(
        env,
        capsys,
        monkeypatch,
        "push",
        DS,
        "hpc",
        "--dry-run",
        "--no-verify-derived-hashes",
        "--audit-json-out",
        str(out_path),
    )
    assert code == 0, out
    assert snapshot_all(env["remote"]) == before
    data = json.loads(out_path.read_text())["data"]
    assert data["action"] == "push"
    assert data["transfer_state"] == "DRY-RUN"
    assert data["verify"] == {"primary": "hash", "sidecars": "strict", "content_hashes": "off"}
    assert (
        data["_derived"]["local_only"] == data["_derived"]["local_only"]
        and data["_derived"]["local_files"] == 1
    )
    assert "Push complete." not in out
    run(env, capsys, monkeypatch, "push", DS, "hpc", "-y")
    code, out, _ = run(env, capsys, monkeypatch, "push", DS, "hpc", "--audit-json-out", str(out_path))
    assert json.loads(out_path.read_text())["data"]["transfer_state"] == "NO-OP"
    assert "Push complete." in out


def test_prompt_n_aborts_with_130_and_changes_nothing(env, capsys, monkeypatch):
    make_dataset(env["remote"], DS)
    code, out, err = run(env, capsys, monkeypatch, "pull", DS, "hpc", stdin="n\n")
    assert code == 130
    assert "Changes detected. Proceed with overwrite?" in out
    assert "[Enter = Yes / n = No] : " in out
    assert not (env["local"] / DS).exists()


def test_prompt_enter_proceeds(env, capsys, monkeypatch):
    make_dataset(env["remote"], DS)
    code, out, _ = run(env, capsys, monkeypatch, "pull", DS, "hpc", stdin="\n")
    assert code == 0, out
    assert tree(env["local"] / DS) == tree(env["remote"] / DS)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--verify-sidecars", "--no-verify-sidecars"],
            "Cannot combine --verify-sidecars and --no-verify-sidecars.",
        ),
        (
            ["--verify-derived-hashes", "--no-verify-derived-hashes"],
            "Cannot combine --verify-derived-hashes and --no-verify-derived-hashes.",
        ),
        (
            ["--verify-derived-hashes", "--no-verify-sidecars"],
            "--verify-derived-hashes requires sidecar verification.",
        ),
        (
            ["--primary-only"],
            "--verify-sidecars requires full dataset transfer (no --primary-only/--skip-snapshots).",
        ),
        (
            ["--skip-snapshots"],
            "--verify-sidecars requires full dataset transfer (no --primary-only/--skip-snapshots).",
        ),
    ],
)
@pytest.mark.parametrize("action", ["pull", "push"])
def test_flag_policy_conflicts_exit_2(env, capsys, monkeypatch, flags, message, action):
    make_dataset(env["remote"], DS)
    make_dataset(env["local"], "other/ds")
    before = (snapshot_all(env["local"]), snapshot_all(env["remote"]))
    code, out, _ = run(env, capsys, monkeypatch, action, DS, "hpc", "-y", *flags)
    assert code == 2
    assert out.strip() == f"ERROR: {message}"
    assert (snapshot_all(env["local"]), snapshot_all(env["remote"])) == before


def test_primary_only_with_no_verify_sidecars_is_allowed(env, capsys, monkeypatch):
    make_dataset(env["remote"], DS)
    code, out, _ = run(
        env, capsys, monkeypatch, "pull", DS, "hpc", "-y", "--primary-only", "--no-verify-sidecars"
    )
    assert code == 0, out
    assert "Verify     : primary=hash sidecars=off content_hashes=off" in out
    assert sorted(tree(env["local"] / DS)) == ["records.parquet"]


def test_dataset_dir_path_target_and_outside_root(env, capsys, monkeypatch, tmp_path):
    make_dataset(env["remote"], DS)
    run(env, capsys, monkeypatch, "pull", DS, "hpc", "-y")
    code, out, _ = run(env, capsys, monkeypatch, "status", str(env["local"] / DS), "hpc")
    assert code == 0
    assert "Dataset: densegen/demo" in out
    outside = make_dataset(tmp_path / "elsewhere", "x")
    code, out, _ = run(env, capsys, monkeypatch, "diff", str(outside), "hpc")
    assert code == 2
    assert "Dataset directory path is outside --root and no registry.yaml ancestor was found." in out


def test_diff_json_format(env, capsys, monkeypatch):
    make_dataset(env["remote"], DS)
    code, out, _ = run(env, capsys, monkeypatch, "diff", DS, "hpc", "--format", "json")
    assert code == 0
    doc = json.loads(out)
    assert doc["usr_output_version"] == 1
    assert doc["data"]["dataset"] == DS
    assert doc["data"]["has_change"] is True
    assert doc["data"]["primary_local"]["exists"] is False


def test_unknown_remote_and_branched_history_are_errors(env, capsys, monkeypatch):
    make_dataset(env["remote"], DS)
    code, out, _ = run(env, capsys, monkeypatch, "diff", DS, "nowhere")
    assert code == 2 and out.startswith("ERROR: Unknown remote 'nowhere'.")
    run(env, capsys, monkeypatch, "pull", DS, "hpc", "-y")
    add_event(env["local"] / DS, "attach")
    add_event(env["remote"] / DS, "import_rows")
    code, out, _ = run(env, capsys, monkeypatch, "push", DS, "hpc", "-y")
    assert code == 2
    assert "ERROR: Remote event log is not a prefix of the locked local event log" in out
    assert "the histories diverged. The tool never merges histories: keep one side." in out
    assert f"`usr pull {DS} hpc`" in out and f"`usr push {DS} hpc`" in out
    code, out, _ = run(env, capsys, monkeypatch, "pull", DS, "hpc", "-y")
    assert code == 2
    assert "ERROR: Remote event log does not extend the local event history" in out
    assert (
        "Hint: Local has 1 event(s) the remote lacks and the remote has 1 the local lacks: "
        "the histories diverged." in out
    )


def test_structlog_events_go_to_log_json(env, capsys, monkeypatch):
    make_dataset(env["remote"], DS)
    log = env["tmp"] / "events.jsonl"
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code = run_cli(
        usr,
        [
            "--root",
            str(env["local"]),
            "--remotes-config",
            str(env["cfg"]),
            "--log-json",
            str(log),
            "pull",
            DS,
            "hpc",
            "-y",
        ],
    )
    assert code == 0
    events = [json.loads(line) for line in log.read_text().splitlines()]
    names = [e["event"] for e in events]
    assert "sync.plan" in names and "sync.file.sent" in names and "sync.verified" in names
    done = [e for e in events if e["event"] == "sync.done"][-1]
    assert done["action"] == "pull" and done["transfer_state"] == "TRANSFERRED"
    assert done["bytes"] > 0 and done["duration_s"] >= 0
    assert all(e["schema"] == 1 and e["ts"].endswith("Z") for e in events)


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_only_on_a_tty(monkeypatch):
    from usrbatch.cli.sync_output import progress_bar

    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert progress_bar() is None  # batch job: no bar at all
    tty = _Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    factory = progress_bar()
    assert factory is not None
    on_bytes = factory(4096)
    on_bytes("a", 2048)
    on_bytes("a", 2048)
    text = tty.getvalue()
    assert "4KB/4KB" in text and "/s" in text and "ETA" in text and text.endswith("\n")


def test_remote_file_names_with_escape_bytes_are_printed_escaped(env, capsys, monkeypatch):
    remote = make_dataset(env["remote"], DS)
    run(env, capsys, monkeypatch, "pull", DS, "hpc", "-y")
    (remote / "_derived").mkdir(exist_ok=True)
    (remote / "_derived" / "evil\x1b[2J.parquet").write_bytes(b"x")
    (remote / "notes\x1b[2J.txt").write_bytes(b"x")
    code, out, err = run(env, capsys, monkeypatch, "diff", DS, "hpc")
    assert code == 0 and "\x1b" not in out + err
    code, out, err = run(env, capsys, monkeypatch, "pull", DS, "hpc", "-y")
    assert "\x1b" not in out + err


def test_a_lock_timeout_names_the_holder_in_one_error_line(env, capsys, monkeypatch):
    import os
    import threading

    from usrbatch.dataset.locks import dataset_lock

    make_dataset(env["remote"], DS)
    run(env, capsys, monkeypatch, "pull", DS, "hpc", "-y")
    add_event(env["remote"] / DS, "import_rows")
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with dataset_lock(env["local"] / DS):  # another thread: its own file description
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(30)
        code, out, err = run(env, capsys, monkeypatch, "pull", DS, "hpc", "-y", "--lock-timeout", "0.2")
    finally:
        release.set()
        holder.join(30)
    assert code == 2
    error = [line for line in out.splitlines() if line.startswith(("ERROR: ", "Hint: "))]
    lock = env["local"] / DS / ".usr.lock"
    assert error[0].startswith(f"ERROR: Timed out after 0.2 s waiting for the dataset lock {lock}. ")
    assert f"It is held by pid {os.getpid()} on host " in error[0]
    assert error[1].startswith(
        f"Hint: Wait for pid {os.getpid()} to finish (or stop it, `kill {os.getpid()}`"
    )
    assert f"usr: waiting for the dataset lock {lock} (up to 0.2 s)." in err
