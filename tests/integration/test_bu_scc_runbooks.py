"""The BU SCC runbooks, executed: every command of docs/bu-scc/{chained-densegen-infer-runbook,
sync-fidelity-drills}.md and of the users' own runbooks (/work/shared/seeds) runs in `bash`, as
typed, against a real OpenSSH server (the `sshd_server` fixture) standing in for the SCC.

Harness:
* `uv run` is the real uv, with UV_NO_SYNC=1 (a plain `uv run` would re-sync .venv to the lock and
  drop the dev tools other engineers rely on) and UV_PROJECT=<checkout>, so commands can run from any
  directory, as they do for users inside their checkout.
* HOME is a temp dir: the docs' `export USR_REMOTES_PATH="$HOME/.config/usr/remotes.yaml"` and
  `LOCAL_USR_ROOT="$HOME/usr_datasets"` then run verbatim. remotes.yaml names a remote `bu-scc`
  of type ssh whose host is the fixture's ssh_config alias (USRBATCH_SSH_CONFIG), so host keys are
  verified strictly against the fixture's known_hosts, as `~/.ssh/config` does for users.
* The "HPC" dataset is created by the usrbatch library (init_dataset, import_records,
  write_overlay_part + their events), under the remote's base_dir.
* Variable assignments a doc makes (`DATASET_ID=...`, `export ...`) are carried to later commands.
* Lines that cannot run here are in MAPPED with the reason and what runs instead; every other line
  runs verbatim and every doc line is accounted for.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sync"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from builders import tree  # noqa: E402
from runbook import Command, bash_commands, inline_uv_commands  # noqa: E402

from usrbatch import auditlog  # noqa: E402
from usrbatch.cli import sync_cmds  # noqa: E402
from usrbatch.cli.common import run_cli  # noqa: E402
from usrbatch.cli.usr_main import usr  # noqa: E402
from usrbatch.dataset.overlays import write_overlay_part  # noqa: E402
from usrbatch.dataset.records import import_records, init_dataset  # noqa: E402
from usrbatch.dataset.ref import open_dataset  # noqa: E402
from usrbatch.dataset.registry import load_registry, register_namespace  # noqa: E402

try:
    from .services import SshdServer
except ImportError:  # pytest "prepend" import mode
    from services import SshdServer  # type: ignore[no-redef]

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs" / "bu-scc"
SEEDS = Path(os.environ.get("USRBATCH_SEEDS_DIR", "/work/shared/seeds"))
CHAINED = "chained-densegen-infer-runbook.md"
DRILLS = "sync-fidelity-drills.md"
DS = "densegen/my_dataset"
UP_TO_DATE = "Status     : up-to-date"
CHANGES = "Status     : CHANGES"
PARQUET_ERROR = "ERROR: verify=parquet requires remote parquet row/col stats."
AUDIT_HEADINGS = ("Dataset    :", "Verify     :", "Primary    :", "meta.md    :", ".events.log:")
AUDIT_SECTIONS = ("_snapshots :", "_derived   :", "_auxiliary :")
ASSIGNMENT = re.compile(r"^(export\s+)?[A-Za-z_][A-Za-z0-9_]*=")
NO_STATS = (
    "--verify parquet needs row/col stats from the remote agent; if it cannot give them (no python3, or an "
    "agent that reads footers with pyarrow on a remote without it) the line cannot pass here"
)

# Commands that cannot run on a test machine, with why, and what the test runs in their place.
#   "densegen-batch": the usrbatch library appends what a DenseGen batch job writes on the HPC
#                     side (new records via import_records, a densegen overlay part, their events);
#   "infer-write-back": write_overlay_part of `infer__logits_ll` keyed by sequence into the local
#                     dataset (what Infer's --write-back does), registering `infer` first when the
#                     local root has no such namespace yet;
#   "parquet, else hash mode": the line runs verbatim; when the remote reports parquet stats it is
#                     checked like any other line (verbatim). When it cannot, the line must fail with
#                     PARQUET_ERROR, exit 2, nothing changed on either side, and then runs with
#                     `--verify hash` ("hash mode here") to continue the flow.
QSUB_WHY = "no SGE/SCC here and `<project>`/`<dnadesign_repo>` are placeholders; DenseGen is not installed"
INFER_WHY = "Infer (dnadesign) is not installed and Evo2 needs a GPU + weights"
MAPPED: dict[str, tuple[str, str]] = {
    "qsub -P <project> -v DENSEGEN_CONFIG=<dnadesign_repo>/src/dnadesign/densegen/workspaces/<workspace>/"
    "config.yaml docs/bu-scc/jobs/densegen-cpu.qsub": ("densegen-batch", QSUB_WHY),
    "qsub -P <project> -v DENSEGEN_CONFIG=<dnadesign_repo>/src/dnadesign/densegen/workspaces/<workspace>/"
    "config.yaml,DENSEGEN_RUN_ARGS='--resume --extend-quota 8 --no-plot' docs/bu-scc/jobs/densegen-cpu.qsub": (
        "densegen-batch",
        QSUB_WHY,
    ),
    'uv run infer run --preset evo2/extract_logits_ll --usr "$DATASET_ID" --field sequence --device cpu '
    "--write-back": ("infer-write-back", INFER_WHY),
    'uv run usr --root "$LOCAL_USR_ROOT" diff "$DATASET_ID" bu-scc --verify parquet': (
        "parquet, else hash mode",
        NO_STATS,
    ),
    'uv run usr --root "$LOCAL_USR_ROOT" pull "$DATASET_ID" bu-scc -y --verify parquet --verify-sidecars': (
        "parquet, else hash mode",
        NO_STATS,
    ),
    'uv run usr --root "$LOCAL_USR_ROOT" push "$DATASET_ID" bu-scc -y --verify parquet --verify-sidecars': (
        "parquet, else hash mode",
        NO_STATS,
    ),
    # The numbered "Chained command loop" (inline commands, run from the datasets root):
    'uv run usr diff "$DATASET_ID" bu-scc --verify parquet': ("parquet, else hash mode", NO_STATS),
    'uv run usr pull "$DATASET_ID" bu-scc -y --verify parquet --verify-sidecars': (
        "parquet, else hash mode",
        NO_STATS,
    ),
    'uv run usr push "$DATASET_ID" bu-scc -y --verify parquet --verify-sidecars': (
        "parquet, else hash mode",
        NO_STATS,
    ),
}


# -- the world: HPC base_dir behind sshd, a local root, a bash that runs doc lines -------------------


def _seed_hpc(base: Path) -> None:
    """The HPC dataset, made by the library: records, a DenseGen overlay part, events."""
    register_namespace(base, "densegen", "densegen__score:float64,densegen__plan:string")
    init_dataset(base, DS, source="densegen", notes="BU SCC runbook test")
    densegen_batch(base, ["ACGTACGTAC", "TTGACAATTA", "GGGCCCAAAT"])


def densegen_batch(base: Path, sequences: list[str]) -> None:
    """What a DenseGen CPU batch job appends on the HPC side."""
    ref = open_dataset(base, DS)
    import_records(ref, [{"sequence": s, "source": "densegen"} for s in sequences])
    table = pq.read_table(ref.records, columns=["id", "sequence"])
    fresh = [
        i
        for i, s in zip(table["id"].to_pylist(), table["sequence"].to_pylist(), strict=True)
        if s in sequences
    ]
    write_overlay_part(
        ref,
        "densegen",
        pa.table(
            {
                "id": fresh,
                "densegen__score": [0.1 * (n + 1) for n in range(len(fresh))],
                "densegen__plan": ["plan-a"] * len(fresh),
            }
        ),
    )


def infer_write_back(root: Path) -> Path:
    """What `infer run ... --write-back` leaves in the local dataset: one `infer` overlay part."""
    registry = load_registry(root, required=False)
    if registry is None or "infer" not in registry.namespaces:
        register_namespace(root, "infer", "infer__logits_ll:float64")
    ref = open_dataset(root, DS)
    seqs = pq.read_table(ref.records, columns=["sequence"])["sequence"].to_pylist()
    result = write_overlay_part(
        ref,
        "infer",
        pa.table({"sequence": seqs, "infer__logits_ll": [-1.5 * (n + 1) for n in range(len(seqs))]}),
        key="sequence",
    )
    return result.path


@dataclass
class Ran:
    command: Command
    how: str  # "verbatim" or "mapped: <action>"
    rc: int | None = None
    out: str = ""
    note: str = ""  # why a line fell back to hash mode (the verbatim run's output)


@dataclass
class World:
    tmp: Path
    env: dict[str, str]
    home: Path
    local_root: Path
    hpc_base: Path
    hpc_workspace: Path
    remotes: Path
    prelude: list[str] = field(default_factory=list)
    ran: list[Ran] = field(default_factory=list)
    parquet_ok: bool | None = None  # None until a --verify parquet line ran
    dirty: bool = True  # local and HPC differ (no successful local pull/push since the last write)
    batches: int = 0

    @property
    def local_ds(self) -> Path:
        return self.local_root / DS

    @property
    def hpc_ds(self) -> Path:
        return self.hpc_base / DS

    def bash(self, text: str, *, cwd: Path | None = None) -> tuple[int, str]:
        """Run one doc line in bash after the assignments the doc made so far; (exit code, output)."""
        script = "\n".join(["set -o pipefail", *self.prelude, text])
        proc = subprocess.run(
            ["bash", "-c", script],
            env=self.env,
            cwd=cwd or self.tmp / "work",
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=300,
        )
        return proc.returncode, proc.stdout + proc.stderr

    def expand(self, text: str) -> list[str]:
        """argv of a doc line, with the doc's variables expanded (for in-process runs)."""
        saved = dict(os.environ)
        try:
            os.environ.update(self.env)
            for line in self.prelude:
                name, _, value = re.sub(r"^export\s+", "", line).partition("=")
                os.environ[name] = os.path.expandvars(shlex.split(value)[0]) if value else ""
            return [os.path.expandvars(tok) for tok in shlex.split(text.replace("\\\n", " "))]
        finally:
            os.environ.clear()
            os.environ.update(saved)


@pytest.fixture
def world(sshd_server: SshdServer, tmp_path: Path):
    home = tmp_path / "home"
    local_root = home / "usr_datasets"
    hpc_base = tmp_path / "scc projectnb" / "usr_datasets"  # a space: quoting is part of the contract
    remotes = home / ".config" / "usr" / "remotes.yaml"
    for d in (local_root, hpc_base, remotes.parent, tmp_path / "work", tmp_path / "hpc-workspace"):
        d.mkdir(parents=True)
    remotes.write_text(
        "remotes:\n  bu-scc:\n    type: ssh\n"
        f"    host: {sshd_server.alias}\n    user: {sshd_server.user}\n    base_dir: '{hpc_base}'\n"
    )
    _seed_hpc(hpc_base)
    uv_cache = subprocess.run(
        ["uv", "cache", "dir"], capture_output=True, text=True, check=True
    ).stdout.strip()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("USR_", "USRBATCH_", "UV_", "VIRTUAL_ENV"))
    }
    env.update(
        HOME=str(home),
        UV_NO_SYNC="1",
        UV_OFFLINE="1",
        UV_PROJECT=str(REPO),
        UV_CACHE_DIR=uv_cache,
        XDG_CACHE_HOME=str(tmp_path / "cache"),
        USRBATCH_SSH_CONFIG=str(sshd_server.ssh_config),
        # What the docs have users export (setup.md); the docs' own export lines set the same values.
        USR_REMOTES_PATH=str(remotes),
        LOCAL_USR_ROOT=str(local_root),
        DATASET_ID=DS,
        HPC_USR_ROOT=str(tmp_path / "hpc-workspace"),
        NO_COLOR="1",
    )
    yield World(tmp_path, env, home, local_root, hpc_base, tmp_path / "hpc-workspace", remotes)
    auditlog.configure(None)


# -- reading a usr command line ----------------------------------------------------------------------

GLOBAL_WITH_VALUE = {"--root", "--remotes-config", "--log-json"}


def usr_verb(argv: list[str]) -> tuple[str, list[str], dict[str, str]]:
    """(verb, rest, global options) of `uv run usr [globals] verb ...`; verb "" if not usr."""
    if argv[:3] != ["uv", "run", "usr"]:
        return "", [], {}
    i, opts = 3, {}
    while i < len(argv) and argv[i].startswith("-"):
        if argv[i] in GLOBAL_WITH_VALUE:
            opts[argv[i]] = argv[i + 1]
            i += 2
        else:
            i += 1
    return (argv[i], argv[i + 1 :], opts) if i < len(argv) else ("", [], opts)


# -- running one doc line, with the contract checks every line gets --------------------------------


def run_line(
    w: World,
    cmd: Command,
    *,
    cwd: Path | None = None,
    text: str | None = None,
    parquet_fallback: bool = False,
) -> Ran:
    """Run `cmd` (or `text`, its hash-mode form) verbatim in bash and check the generic contracts.

    parquet_fallback: a `--verify parquet` line; if the remote cannot report parquet row/col stats
    it must fail with PARQUET_ERROR (exit 2) having changed nothing, and then runs in hash mode."""
    line = text or cmd.text
    argv = w.expand(line)
    verb, rest, opts = usr_verb(argv)
    root = Path(opts.get("--root") or (cwd if cwd else w.tmp / "work"))
    local = root.resolve() == w.local_root.resolve()
    before_local, before_hpc = tree(w.local_ds), tree(w.hpc_ds)
    rc, out = w.bash(line, cwd=cwd)
    if parquet_fallback:
        w.parquet_ok = not (rc == 2 and PARQUET_ERROR in out.splitlines())
        if not w.parquet_ok:
            assert (tree(w.local_ds), tree(w.hpc_ds)) == (before_local, before_hpc), cmd.where()
            ran = run_line(w, cmd, cwd=cwd, text=hash_mode(line))
            ran.note = out.strip().splitlines()[-1]
            return ran
    ran = Ran(cmd, "verbatim" if text is None else "mapped: hash mode here", rc, out)
    w.ran.append(ran)
    where = f"{cmd.where()}: {line}\n--- output (exit {rc}):\n{out}"
    if verb == "attach":
        return ran  # Drill 3 checks its own outcome
    assert rc == 0, where
    if ASSIGNMENT.match(line):
        w.prelude.append(line)
    if verb in ("pull", "push"):
        action = verb.upper()
        assert f"{action} audit: " in out, where
        for heading in (*AUDIT_HEADINGS, *AUDIT_SECTIONS):
            assert any(ln.startswith(heading) for ln in out.splitlines()), (heading, where)
        assert out.rstrip().endswith(f"{verb.capitalize()} complete."), where
        remote_side = w.hpc_ds
        mirror = root / DS
        assert tree(mirror) == tree(remote_side), where  # both directions end byte-identical
        if local:
            if not w.dirty:
                assert "Already up to date." in out and f"{action} audit: NO-OP" in out, where
            w.dirty = False
        if "--audit-json-out" in rest:
            audit = json.loads(Path(rest[rest.index("--audit-json-out") + 1]).read_text())
            assert audit["usr_output_version"] == 1 and audit["data"]["action"] == verb, where
            assert audit["data"]["transfer_state"] in ("TRANSFERRED", "NO-OP"), where
            assert audit["data"]["verify"] == {
                "primary": "hash",
                "sidecars": "strict",
                "content_hashes": "on",
            }
        if "--log-json" in opts:
            events = [json.loads(x) for x in Path(opts["--log-json"]).read_text().splitlines()]
            done = [e for e in events if e.get("event") == "sync.done" and e.get("action") == verb]
            assert done, where
    elif verb in ("diff", "status"):
        expected = CHANGES if w.dirty else UP_TO_DATE
        assert expected in out.splitlines(), f"expected {expected!r}\n{where}"
        assert (tree(w.local_ds), tree(w.hpc_ds)) == (before_local, before_hpc), where  # diff writes nothing
        if "--audit-json-out" in rest:
            audit = json.loads(Path(rest[rest.index("--audit-json-out") + 1]).read_text())
            assert audit["data"]["action"] == "diff" and audit["data"]["transfer_state"] == "DIFF-ONLY"
    elif verb == "remotes" and rest[:1] == ["doctor"]:
        assert "Doctor checks passed." in out, where
    elif verb == "remotes" and rest[:1] == ["show"]:
        assert "name     : bu-scc" in out and f"base_dir : {w.hpc_base}" in out, where
    elif verb == "head":
        lines = out.rstrip("\n").splitlines()
        assert lines[0].split()[:2] == ["id", "sequence"], where
        n = int(rest[rest.index("-n") + 1])
        rows = pq.read_metadata(w.local_ds / "records.parquet").num_rows
        assert len(lines) - 1 == min(n, rows), where
    elif verb == "events":
        lines = out.strip().splitlines()
        events = [json.loads(x) for x in lines]
        assert 0 < len(events) <= int(rest[rest.index("-n") + 1]), where
        assert all("action" in e for e in events), where
    elif verb == "namespace":
        assert "Registered namespace 'infer'" in out, where
    return ran


def hash_mode(text: str) -> str:
    return text.replace("--verify parquet", "--verify hash")


def run_mapped(w: World, cmd: Command, *, cwd: Path | None = None) -> None:
    action, why = MAPPED[cmd.key]
    if action == "densegen-batch":
        qsub_script = REPO / cmd.text.split()[-1]
        assert qsub_script.is_file(), f"{cmd.where()} names {qsub_script}, which does not exist"
        w.batches += 1
        densegen_batch(w.hpc_base, [f"{'ACGT' * (w.batches + 2)}{tail}" for tail in ("AA", "CC", "GG")])
        w.dirty = True
    elif action == "infer-write-back":
        infer_write_back(w.local_root)
        w.dirty = True
    elif action == "parquet, else hash mode":
        run_line(w, cmd, cwd=cwd, parquet_fallback=True)
        return
    else:  # pragma: no cover - a typo in MAPPED
        raise AssertionError(f"unknown mapping {action!r} ({why})")
    w.ran.append(Ran(cmd, f"mapped: {action}"))


def run_doc(
    w: World, commands: list[Command], hooks: dict[str, Callable[[World, Command], None]] | None = None
):
    """Every command in order; `hooks[heading-prefix]` runs before a sync command under that heading."""
    for cmd in commands:
        for prefix, hook in (hooks or {}).items():
            if cmd.heading.startswith(prefix):
                hook(w, cmd)
        if cmd.key in MAPPED:
            run_mapped(w, cmd)
        else:
            run_line(w, cmd)
    missing = [c.where() for c in commands if not any(r.command is c for r in w.ran)]
    assert missing == []


# -- the drills' faults, injected into a real SSH transport -----------------------------------------


class Faulty:
    """The real transport the CLI opened, with one operation made to misbehave."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.fired = False

    def __getattr__(self, name):
        return getattr(self.inner, name)


class DropDerivedDownload(Faulty):
    """A partial payload: the download delivers everything but one `_derived` file."""

    def download(self, items, *args, **kwargs):
        dropped = next(i for i in items if "/_derived/" in i.remote)
        self.fired = True
        return self.inner.download([i for i in items if i is not dropped], *args, **kwargs)


class DropOverlayRename(Faulty):
    """The remote ends up without a local overlay: its rename into place never happens."""

    def apply(self, renames, removals, *args, **kwargs):
        dropped = next((r for r in renames if "/_derived/" in r[1]), None)
        self.fired = self.fired or dropped is not None  # the cleanup call comes after
        return self.inner.apply([r for r in renames if r is not dropped], removals, *args, **kwargs)


def usr_in_process(
    w: World, monkeypatch, capsys, argv: list[str], fault: type[Faulty]
) -> tuple[int, str, Faulty]:
    """A doc line through the real `usr` CLI in this process, its SSH transport wrapped by `fault`."""
    for key in ("USR_REMOTES_PATH", "USRBATCH_SSH_CONFIG", "XDG_CACHE_HOME", "HOME"):
        monkeypatch.setenv(key, w.env[key])
    monkeypatch.delenv("USRBATCH_AUDIT_LOG", raising=False)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    real_open = sync_cmds.open_remote
    wrapped: list[Faulty] = []

    def open_faulty(ctx, name):
        wrapped.append(fault(real_open(ctx, name)))
        return wrapped[0]

    monkeypatch.setattr(sync_cmds, "open_remote", open_faulty)
    capsys.readouterr()
    verb, _rest, _opts = usr_verb(argv)
    assert verb in ("pull", "push")
    code = run_cli(usr, argv[3:])
    monkeypatch.setattr(sync_cmds, "open_remote", real_open)
    return code, capsys.readouterr().out, wrapped[0]


def drill_hooks(monkeypatch, capsys) -> dict[str, Callable[[World, Command], None]]:
    def drill1(w: World, cmd: Command) -> None:
        argv = w.expand(cmd.text if w.parquet_ok is not False else hash_mode(cmd.text))
        if usr_verb(argv)[0] != "pull":
            return
        records = (w.local_ds / "records.parquet").read_bytes()
        before = tree(w.local_ds)
        code, out, t = usr_in_process(w, monkeypatch, capsys, argv, DropDerivedDownload)
        assert t.fired and code == 2, out
        assert re.search(r"^ERROR: post-pull-sidecars: sidecar mismatch; .*_derived files", out, re.M), out
        assert (w.local_ds / "records.parquet").read_bytes() == records  # not promoted
        assert tree(w.local_ds) == before
        assert not list(w.local_root.glob(".usr-pull-*"))

    def drill2(w: World, cmd: Command) -> None:
        argv = w.expand(cmd.text if w.parquet_ok is not False else hash_mode(cmd.text))
        if usr_verb(argv)[0] != "push":
            return
        local_parts = sorted(p.name for p in (w.local_ds / "_derived" / "infer").glob("part-*.parquet"))
        code, out, t = usr_in_process(w, monkeypatch, capsys, argv, DropOverlayRename)
        assert t.fired and code == 2, out
        assert re.search(r"^ERROR: post-push-sidecars: sidecar mismatch; .*_derived files", out, re.M), out
        remote_parts = sorted(p.name for p in (w.hpc_ds / "_derived" / "infer").glob("part-*.parquet"))
        assert set(local_parts) - set(remote_parts), "the dropped overlay must be missing on the remote"
        assert not [p for p in w.hpc_ds.rglob("*") if p.name.startswith(".usrbatch-tmp-")]

    return {"Drill 1": drill1, "Drill 2": drill2}


def drill3_check(w: World) -> None:
    attach = [r for r in w.ran if " attach " in r.command.key]
    assert attach, "Drill 3's attach did not run"
    for r in attach:
        assert r.rc == 2, r.out
        assert re.search(
            r"^ERROR: (Registry required but not found|Namespace 'infer' is not registered|"
            r"Overlay column 'infer__bad_field' not registered under namespace 'infer')",
            r.out,
            re.M,
        ), r.out


def run_inline_loop(w: World, path: Path) -> None:
    """The numbered loop: items 1-3, item 4 (write-back, prose), 5-6, then 7: diff must be up-to-date.
    The items carry no --root, so they run from the datasets root (the cwd fallback of `usr`)."""
    loop = [c for c in inline_uv_commands(path) if c.heading == "Chained command loop"]
    assert [usr_verb(w.expand(c.text))[0] for c in loop] == ["remotes", "diff", "pull", "diff", "push"]
    for i, cmd in enumerate(loop):
        if i == 3:
            infer_write_back(w.local_root)  # item 4: "Run local notebook or sibling tool write-back."
            w.dirty = True
        if cmd.key in MAPPED:
            run_mapped(w, cmd, cwd=w.local_root)
        else:
            run_line(w, cmd, cwd=w.local_root)
    final = run_line(w, loop[3], cwd=w.local_root, parquet_fallback=True)
    assert UP_TO_DATE in final.out.splitlines()  # item 7


def baseline_then_hpc_batch(w: World) -> None:
    """Drills start from a synced pair, then DenseGen appends on the HPC (so a pull has overlays to move)."""
    rc, out = w.bash('uv run usr --root "$LOCAL_USR_ROOT" pull "$DATASET_ID" bu-scc -y')
    assert rc == 0, out
    w.batches += 1
    densegen_batch(w.hpc_base, ["CCCCAAAATTTTGGGG", "ATATATATCGCGCGCG"])
    w.dirty = True


# -- the tests ----------------------------------------------------------------------------------------


def _chained(w: World, path: Path) -> None:
    run_doc(w, bash_commands(path))
    assert not w.dirty and tree(w.local_ds) == tree(w.hpc_ds)
    ran = {r.command.key for r in w.ran}
    assert any("densegen-cpu.qsub" in k for k in ran) and any("infer run" in k for k in ran)
    assert tree(w.hpc_workspace / DS) == tree(w.hpc_ds)  # step 5: the HPC workspace copy


@pytest.mark.timeout(900)  # ~40 `uv run` + ssh round trips
def test_chained_runbook_doc(world):
    _chained(world, DOCS / CHAINED)
    report(world)


@pytest.mark.timeout(900)  # ~40 `uv run` + ssh round trips
def test_fidelity_drills_doc(world, monkeypatch, capsys):
    baseline_then_hpc_batch(world)
    run_doc(world, bash_commands(DOCS / DRILLS), drill_hooks(monkeypatch, capsys))
    drill3_check(world)
    assert tree(world.local_ds) == tree(world.hpc_ds)
    run_inline_loop(world, DOCS / DRILLS)
    report(world)


@pytest.fixture
def seeds() -> Path:
    if not (SEEDS / CHAINED).is_file() or not (SEEDS / DRILLS).is_file():
        pytest.skip(f"the users' runbooks are not at {SEEDS} (set USRBATCH_SEEDS_DIR)")
    return SEEDS


@pytest.mark.timeout(900)  # ~40 `uv run` + ssh round trips
def test_seed_chained_runbook_verbatim(world, seeds):
    _chained(world, seeds / CHAINED)
    report(world)


@pytest.mark.timeout(900)  # ~40 `uv run` + ssh round trips
def test_seed_fidelity_drills_verbatim(world, seeds, monkeypatch, capsys):
    baseline_then_hpc_batch(world)
    # The seed's Drill 3 uses /tmp/bad_overlay.csv without saying how it is made; write it as ours does.
    Path("/tmp/bad_overlay.csv").write_text("sequence,bad_field\nACGTACGTAC,1\n")
    before_derived = tree(world.local_ds / "_derived")
    commands = bash_commands(seeds / DRILLS)
    run_doc(world, commands, drill_hooks(monkeypatch, capsys))
    drill3_check(world)
    assert tree(world.local_ds / "_derived") != before_derived  # Infer's part arrived ...
    assert not [
        p for p in (world.local_ds / "_derived").rglob("*") if "bad" in p.name
    ]  # ... nothing of attach
    run_inline_loop(world, seeds / DRILLS)
    report(world)


def test_drill3_attach_leaves_the_dataset_byte_identical(world):
    """Drill 3 on its own, for both registry states a user can be in (no registry; infer registered)."""
    rc, out = world.bash('uv run usr --root "$LOCAL_USR_ROOT" pull "$DATASET_ID" bu-scc -y')
    assert rc == 0, out
    [printf, attach] = [c for c in bash_commands(DOCS / DRILLS) if c.heading.startswith("Drill 3")]
    assert world.bash(printf.text)[0] == 0
    for expected in ("Registry required but not found", "Overlay column 'infer__bad_field' not registered"):
        before = tree(world.local_ds)
        events = (world.local_ds / ".events.log").read_bytes()
        rc, out = world.bash(attach.text)
        assert rc == 2 and out.startswith(f"ERROR: {expected}"), out
        assert "Traceback" not in out
        assert tree(world.local_ds) == before and (world.local_ds / ".events.log").read_bytes() == events
        assert not (world.local_ds / "_derived" / "infer").exists()
        register_namespace(world.local_root, "infer", "infer__logits_ll:float64", overwrite=True)


def test_mapping_table_has_no_stale_entries():
    docs = [DOCS / CHAINED, DOCS / DRILLS] + [SEEDS / n for n in (CHAINED, DRILLS) if (SEEDS / n).is_file()]
    keys = {c.key for p in docs for c in [*bash_commands(p), *inline_uv_commands(p)]}
    assert set(MAPPED) <= keys


def report(w: World) -> None:
    """Printed with -s: which doc lines ran verbatim and which were mapped."""
    for r in w.ran:
        print(f"{r.how:<32} {r.command.where()}  {r.command.key}" + (f"  <- {r.note}" if r.note else ""))
