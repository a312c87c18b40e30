"""A pending promotion is a state, not a secret: a `usr pull` SIGKILLed inside its promotion (a
real subprocess, killed at a named rename) leaves a journal; until a pull completes it, local
mutations refuse with the way out, `validate` reports it, and a roll-forward never discards a
local change made after the journal was written."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from builders import tree

from usrbatch.cli.common import run_cli
from usrbatch.cli.usr_main import usr
from usrbatch.dataset.overlays import write_overlay_part
from usrbatch.dataset.records import import_records, init_dataset
from usrbatch.dataset.ref import open_dataset
from usrbatch.dataset.registry import register_namespace
from usrbatch.errors import DatasetError, VerificationError
from usrbatch.sync import engine
from usrbatch.transport.local import LocalTransport

DS = "ns/demo"

# The real `usr pull` entry point, SIGKILLed when it is about to rename a staged file (or the
# journal's temp) whose name contains argv[1]: no finally, no cleanup, as under kill -9,
# qdel/scancel or a walltime.
KILL_AT_RENAME = """
import os, signal, sys
from pathlib import Path
from usrbatch.cli.common import run_cli
from usrbatch.cli.usr_main import usr

victim = sys.argv[1]
real = os.replace

def replace(src, dst, *a, **kw):
    if ".usr-pull-" in str(src) and victim in Path(src).name:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(src, dst, *a, **kw)

os.replace = replace
sys.exit(run_cli(usr, sys.argv[2:]))
"""


class Env:
    def __init__(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.tmp = tmp_path
        self.local = tmp_path / "local"
        self.remote = tmp_path / "remote"
        self.cfg = tmp_path / "remotes.yaml"
        self.cfg.write_text(f"remotes:\n  lab:\n    type: local\n    base_dir: {self.remote}\n")
        self.capsys = capsys

    def usr(self, *argv: str) -> tuple[int, str]:
        self.capsys.readouterr()
        code = run_cli(usr, ["--root", str(self.local), "--remotes-config", str(self.cfg), *argv])
        out = self.capsys.readouterr()
        return code, out.out + out.err

    def killed_pull(self, at: str) -> None:
        argv = ["--root", str(self.local), "--remotes-config", str(self.cfg), "pull", DS, "lab", "-y"]
        child = subprocess.run(
            [sys.executable, "-c", KILL_AT_RENAME, at, *argv], capture_output=True, text=True, timeout=120
        )
        assert child.returncode == -signal.SIGKILL, child.stdout + child.stderr
        assert self.leftovers(), "the killed pull left nothing behind"

    def leftovers(self) -> list[Path]:
        """The pull's control files at the datasets root (staging dirs, journals)."""
        return sorted(p for p in self.local.iterdir() if p.name.startswith(".usr-pull-"))

    def csv(self, name: str, *sequences: str) -> Path:
        path = self.tmp / name
        path.write_text("sequence\n" + "".join(f"{s}\n" for s in sequences))
        return path

    def ids(self) -> list[str]:
        return sorted(pq.read_table(self.local / DS / "records.parquet", columns=["id"])["id"].to_pylist())


@pytest.fixture
def env(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Env:
    """A real USR dataset on the remote, pulled once; then the remote imports more rows."""
    e = Env(tmp_path, capsys)
    ref = init_dataset(e.remote, DS, source="tests").dataset
    register_namespace(e.remote, "infer", "infer__ll:float64", owner="tests")
    import_records(ref, [{"sequence": s} for s in ("ACGTACGT", "AAAACCCC")], source="tests")
    e.local.mkdir()
    (e.local / "registry.yaml").write_bytes((e.remote / "registry.yaml").read_bytes())
    code, out = e.usr("pull", DS, "lab", "-y")
    assert code == 0, out
    import_records(ref, [{"sequence": "GGGGTTTT"}], source="remote batch")
    return e


def test_local_import_after_interrupted_promotion_is_never_silently_lost(env):
    """The issue's scenario: kill before the event log is promoted, import locally, pull again.
    Today the import succeeds and the next pull throws its rows and event away."""
    env.killed_pull(at=".events.log")  # records.parquet is the remote's already; the log is not
    code, out = env.usr("import", DS, "--from", "csv", "--path", str(env.csv("new.csv", "CCCCAAAA")))
    assert code == 2, out
    assert "interrupted pull promotion pending" in out
    assert "Refusing `import`" in out
    assert f"usr pull {DS} REMOTE" in out
    # finishing it is what the message says: the pull completes, then the import works
    code, out = env.usr("pull", DS, "lab", "-y")
    assert code == 0, out
    assert env.leftovers() == []
    assert tree(env.local / DS) == tree(env.remote / DS)
    code, out = env.usr("import", DS, "--from", "csv", "--path", str(env.csv("new.csv", "CCCCAAAA")))
    assert code == 0, out
    assert len(env.ids()) == 4


def test_roll_forward_refuses_a_local_change_made_by_a_writer_that_ignores_the_guard(env, monkeypatch):
    """A writer that does not know about journals (the public tool, an older usrbatch) imports
    while the promotion is pending: the roll-forward must refuse, not drop the rows and event."""
    env.killed_pull(at=".events.log")
    monkeypatch.setattr("usrbatch.dataset.records.refuse_if_pending", lambda *a: None, raising=False)
    import_records(open_dataset(env.local, DS), [{"sequence": "CCCCAAAA"}], source="local")
    monkeypatch.undo()
    ids_with_local_row = env.ids()
    local_log = (env.local / DS / ".events.log").read_bytes()
    before = tree(env.local / DS)

    with pytest.raises(VerificationError) as caught:
        engine.pull(env.local, DS, LocalTransport(env.remote))

    assert "cannot be completed" in caught.value.message
    assert "records.parquet" in caught.value.message and ".events.log" in caught.value.message
    assert "abandon the promotion" in (caught.value.hint or "")
    assert tree(env.local / DS) == before  # nothing touched: rows and event kept
    assert env.ids() == ids_with_local_row and len(ids_with_local_row) == 4
    assert (env.local / DS / ".events.log").read_bytes() == local_log
    # following the hint (abandon) leaves the tool's own divergence rule in charge
    subprocess.run(["rm", "-r", *map(str, env.leftovers())], check=True)
    code, out = env.usr("pull", DS, "lab", "-y")
    assert code == 2, out
    assert env.ids() == ids_with_local_row


def test_every_mutation_refuses_while_pending_and_validate_reports_it(env):
    env.killed_pull(at=".events.log")
    before = tree(env.local / DS)
    attach_csv = env.tmp / "scores.csv"
    attach_csv.write_text("sequence,infer__ll\nACGTACGT,0.5\n")
    (env.local / "registry.yaml").write_bytes((env.remote / "registry.yaml").read_bytes())
    for argv, action in (
        (["attach", DS, "--path", str(attach_csv), "--namespace", "infer", "--key", "sequence"], "attach"),
        (["import", DS, "--from", "csv", "--path", str(env.csv("b.csv", "TTTTAAAA"))], "import"),
    ):
        code, out = env.usr(*argv)
        assert code == 2, out
        assert out.startswith("ERROR: Dataset 'ns/demo' has an interrupted pull promotion pending")
        assert f"Refusing `{action}`" in out and "Hint: Run `usr pull ns/demo REMOTE`" in out
    with pytest.raises(DatasetError, match="Refusing `write_overlay_part`"):
        write_overlay_part(open_dataset(env.local, DS), "infer", [{"id": env.ids()[0], "ll": 0.1}])
    code, out = env.usr("validate", DS)
    assert code == 2, out
    assert "interrupted pull promotion pending" in out and "failed validation" in out
    assert tree(env.local / DS) == before


def test_init_refuses_over_an_interrupted_bootstrap_pull(tmp_path, capsys):
    e = Env(tmp_path, capsys)
    ref = init_dataset(e.remote, DS, source="tests").dataset
    import_records(ref, [{"sequence": "ACGTACGT"}], source="tests")
    e.local.mkdir()
    (e.local / "registry.yaml").write_bytes((e.remote / "registry.yaml").read_bytes())
    e.killed_pull(at="records.parquet")  # a first pull, killed before records.parquet landed
    assert not (e.local / DS / "records.parquet").exists()
    code, out = e.usr("init", DS)
    assert code == 2, out
    assert "Refusing `init`" in out
    assert not (e.local / DS / "records.parquet").exists()
    code, out = e.usr("pull", DS, "lab", "-y")
    assert code == 0, out
    assert tree(e.local / DS) == tree(e.remote / DS)


def test_a_pull_without_interruption_leaves_nothing_pending(env):
    code, out = env.usr("pull", DS, "lab", "-y")
    assert code == 0, out
    assert env.leftovers() == []
    code, out = env.usr("validate", DS)
    assert code == 0, out


@pytest.mark.parametrize(
    "at",
    [
        ".promotion.json",  # while the journal is committed: nothing promoted, nothing pending
        "records-",  # the new snapshot: the first rename
        "records.parquet",
        ".events.log",  # the last rename
    ],
)
def test_a_pull_killed_at_any_promotion_point_converges_on_the_next_pull(env, at):
    env.killed_pull(at=at)
    code, out = env.usr("pull", DS, "lab", "-y")
    assert code == 0, out
    assert tree(env.local / DS) == tree(env.remote / DS)
    assert env.leftovers() == []
    code, out = env.usr("validate", DS)
    assert code == 0, out
