"""Dataset-id resolution of `usr diff|pull|push` through the real CLI against a `local` remote
(§10): flat ids resolved locally, bootstrap of ids missing locally, ambiguity, push of a missing
dataset, and strict bootstrap (`--strict-bootstrap-id` / USR_SYNC_STRICT_BOOTSTRAP_ID)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sync"))
from builders import make_dataset, tree, write_records  # noqa: E402

from usrbatch import auditlog  # noqa: E402
from usrbatch.cli.common import run_cli  # noqa: E402
from usrbatch.cli.usr_main import usr  # noqa: E402


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("USRBATCH_AUDIT_LOG", raising=False)
    monkeypatch.delenv("USR_SYNC_STRICT_BOOTSTRAP_ID", raising=False)
    local, remote = tmp_path / "local", tmp_path / "remote"
    remote.mkdir()
    cfg = tmp_path / "remotes.yaml"
    cfg.write_text(f"remotes:\n  hpc:\n    type: local\n    base_dir: {remote}\n")
    yield {"local": local, "remote": remote, "cfg": cfg}
    auditlog.configure(None)


def run(env, capsys, monkeypatch, *args):
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code = run_cli(usr, ["--root", str(env["local"]), "--remotes-config", str(env["cfg"]), *args])
    return code, capsys.readouterr().out


def test_flat_id_resolves_to_the_unique_local_namespaced_dataset(env, capsys, monkeypatch):
    make_dataset(env["remote"], "densegen/demo")
    make_dataset(env["local"], "densegen/demo")
    write_records(env["remote"] / "densegen" / "demo" / "records.parquet", 5, tag="r")
    code, out = run(env, capsys, monkeypatch, "diff", "demo", "hpc")
    assert code == 0 and out.splitlines()[0] == "Dataset: densegen/demo"
    code, out = run(env, capsys, monkeypatch, "pull", "demo", "hpc", "-y")
    assert code == 0, out
    assert "Dataset    : densegen/demo" in out.splitlines()
    assert tree(env["local"] / "densegen" / "demo") == tree(env["remote"] / "densegen" / "demo")
    assert not (env["local"] / "demo").exists()
    code, out = run(env, capsys, monkeypatch, "push", "demo", "hpc", "-y")
    assert code == 0 and "PUSH audit: NO-OP" in out


@pytest.mark.parametrize("raw", ["my_dataset", "densegen/my_dataset"])
def test_diff_and_pull_bootstrap_an_id_missing_locally(env, capsys, monkeypatch, raw):
    make_dataset(env["remote"], raw)
    code, out = run(env, capsys, monkeypatch, "diff", raw, "hpc")
    assert code == 0 and out.splitlines()[0] == f"Dataset: {raw}"
    assert "Status     : CHANGES" in out
    code, out = run(env, capsys, monkeypatch, "pull", raw, "hpc", "-y")
    assert code == 0, out
    assert tree(env["local"] / raw) == tree(env["remote"] / raw)


def test_ambiguous_flat_id_is_an_error_listing_candidates(env, capsys, monkeypatch):
    make_dataset(env["local"], "densegen/demo")
    make_dataset(env["local"], "infer/demo")
    make_dataset(env["remote"], "demo")
    for verb in ("diff", "pull", "push"):
        code, out = run(env, capsys, monkeypatch, verb, "demo", "hpc", "-y")
        assert code == 2
        assert out.splitlines()[0] == (
            f"ERROR: Ambiguous dataset name 'demo' under {env['local']}. Use a namespace-qualified id. "
            "Matches: densegen/demo, infer/demo"
        )
    assert not (env["local"] / "demo").exists()


@pytest.mark.parametrize("raw", ["demo", "densegen/demo"])
def test_push_of_a_dataset_missing_locally_names_root_and_fix(env, capsys, monkeypatch, raw):
    make_dataset(env["remote"], "densegen/demo")
    before = tree(env["remote"])
    code, out = run(env, capsys, monkeypatch, "push", raw, "hpc", "-y")
    assert code == 2
    lines = out.splitlines()
    assert lines[0] == (
        f"ERROR: Dataset not found: {raw} (no records.parquet under {env['local'] / raw}); "
        "push needs the dataset locally."
    )
    assert lines[1].startswith("Hint: Pass --root <usr_dataset_root>") and "usr pull" in lines[1]
    assert tree(env["remote"]) == before


def test_strict_flag_uses_the_flat_id_as_given(env, capsys, monkeypatch):
    """No local name guessing: `demo` stays `demo` although `densegen/demo` exists locally."""
    make_dataset(env["local"], "densegen/demo")
    make_dataset(env["remote"], "demo")
    code, out = run(env, capsys, monkeypatch, "pull", "demo", "hpc", "-y", "--strict-bootstrap-id")
    assert code == 0, out
    assert tree(env["local"] / "demo") == tree(env["remote"] / "demo")


@pytest.mark.parametrize("how", ["flag", "1", "true", "YES", "on"])
def test_strict_rejects_path_like_ids(env, capsys, monkeypatch, how):
    args = ["pull", "../x", "hpc", "-y"]
    if how == "flag":
        args.append("--strict-bootstrap-id")
    else:
        monkeypatch.setenv("USR_SYNC_STRICT_BOOTSTRAP_ID", how)
    code, out = run(env, capsys, monkeypatch, *args)
    assert code == 2
    assert out.startswith("ERROR: Strict bootstrap mode requires an explicit canonical dataset id")
    assert not env["local"].exists()


@pytest.mark.parametrize("how", ["flag", "env"])
def test_strict_allows_an_existing_local_id(env, capsys, monkeypatch, how):
    make_dataset(env["local"], "densegen/demo")
    make_dataset(env["remote"], "densegen/demo")
    write_records(env["remote"] / "densegen" / "demo" / "records.parquet", 4, tag="r")
    args = ["pull", "densegen/demo", "hpc", "-y"]
    if how == "flag":
        args.append("--strict-bootstrap-id")
    else:
        monkeypatch.setenv("USR_SYNC_STRICT_BOOTSTRAP_ID", "1")
    code, out = run(env, capsys, monkeypatch, *args)
    assert code == 0, out
    assert tree(env["local"] / "densegen" / "demo") == tree(env["remote"] / "densegen" / "demo")


def test_env_off_values_keep_local_resolution(env, capsys, monkeypatch):
    make_dataset(env["local"], "densegen/demo")
    make_dataset(env["remote"], "densegen/demo")
    monkeypatch.setenv("USR_SYNC_STRICT_BOOTSTRAP_ID", "0")
    code, out = run(env, capsys, monkeypatch, "pull", "demo", "hpc", "-y")
    assert code == 0 and "Dataset    : densegen/demo" in out.splitlines()


def test_strict_is_a_pull_option_only(env, capsys, monkeypatch):
    code = run_cli(usr, ["--remotes-config", str(env["cfg"]), "push", "demo", "hpc", "--strict-bootstrap-id"])
    assert code == 2 and "No such option '--strict-bootstrap-id'" in capsys.readouterr().err
