"""`usr` data commands through the real entry point (run_cli: ERROR + exit 2 for user mistakes)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from usrbatch.dataset.registry import registry_hash

VENV_USR = Path(sys.executable).with_name("usr")


def test_init_creates_registry_and_dataset(cli) -> None:
    code, out = cli("init", "demo", "--notes", "hello")
    assert code == 0
    assert "registry.yaml with the reserved 'usr_state' namespace" in out
    assert "Initialized dataset 'demo'" in out
    assert (cli.root / "demo" / "records.parquet").is_file()
    code, out = cli("init", "demo")
    assert code == 2 and out.startswith("ERROR: Dataset already exists")


def test_import_attach_head_info_validate_ls_tail(populated) -> None:
    cli, root, tmp = populated
    overlay = tmp / "o.csv"
    overlay.write_text(
        'sequence,ll,v,s\nACGTACGT,1.234567,"[1, 2, 3, 4, 5, 6, 7, 8]","{""a"": 1, ""b"": ""x""}"\n'
    )
    code, out = cli("attach", "ns/demo", "--path", str(overlay), "--namespace", "infer", "--key", "sequence")
    assert code == 0, out
    assert out.strip() == f"Attached 1 matched row(s) of infer columns into ns/demo (input file: {overlay})"
    code, out = cli("head", "ns/demo", "-n", "2", "--columns", "sequence,infer__ll,infer__v,infer__s")
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].split() == ["id", "sequence", "infer__ll", "infer__v", "infer__s"]
    assert (
        "1.2346" in lines[1] and "vec[8] [1, 2, 3, 4, 5, 6, …]" in lines[1] and "{ a: 1, b: x }" in lines[1]
    )
    assert "∅" in lines[2] and len(lines) == 3
    code, out = cli("head", "ns/demo")
    assert code == 0 and out.splitlines()[0].split()[:2] == ["id", "sequence"]
    code, out = cli("info", "ns/demo", "--format", "json")
    info = json.loads(out)
    assert info["rows"] == 3 and info["overlay_columns"] == ["infer__ll", "infer__v", "infer__s"]
    assert info["overlays"][0]["namespace"] == "infer" and info["events"] >= 3
    code, out = cli("info", "ns/demo")
    assert "rows: 3" in out and "infer (compact): infer__ll, infer__v, infer__s" in out
    code, out = cli("validate", "ns/demo", "--strict")
    assert code == 0 and out.startswith("OK: dataset 'ns/demo' is valid")
    code, out = cli("ls")
    assert out.split() == ["ns/demo"]
    code, out = cli("ls", "--format", "json")
    assert json.loads(out)["datasets"] == ["ns/demo"]
    code, out = cli("events", "tail", "ns/demo", "--n", "1")
    assert code == 0 and json.loads(out)["action"] == "attach"
    code, out = cli("events", "tail", "ns/demo", "-n", "2", "--format", "raw")
    assert [json.loads(line)["action"] for line in out.splitlines()] == ["import_rows", "attach"]
    code, out = cli("events", "tail", "ns/demo")
    assert [json.loads(line)["action"] for line in out.splitlines()][:2] == ["init", "import_rows"]


BAD_INPUTS = [
    (["init", "../escape"], r"ERROR: Dataset id '\.\./escape' has an empty, '\.' or '\.\.' component"),
    (
        ["import", "ns/demo", "--from", "csv", "--path", "{bad_csv}"],
        r"ERROR: Malformed CSV .*bad\.csv: .*Expected 1 columns, got 2",
    ),
    (
        ["import", "ns/demo", "--from", "csv", "--path", "{bad_alpha}"],
        r"ERROR: .*alpha\.csv: 1 sequence\(s\) contain symbols outside alphabet dna_4",
    ),
    (
        ["import", "ns/demo", "--from", "csv", "--path", "{dupes}"],
        r"ERROR: .*dupes\.csv: duplicate sequences",
    ),
    (
        ["attach", "ns/demo", "--path", "{overlay}", "--namespace", "ghost", "--key", "sequence"],
        r"ERROR: Namespace 'ghost' is not registered\. Register it with `usr namespace register \.\.\.`\.",
    ),
    (
        [
            "attach",
            "ns/demo",
            "--path",
            "{overlay}",
            "--namespace",
            "infer",
            "--key",
            "sequence",
            "--columns",
            "bad_field",
        ],
        r"ERROR: Column\(s\) 'bad_field' named in --columns are not in the input file .*o\.csv",
    ),
    (
        [
            "attach",
            "ns/demo",
            "--path",
            "{overlay}",
            "--namespace",
            "infer",
            "--key",
            "sequence",
            "--key-col",
            "seq",
        ],
        r"ERROR: Missing key column 'seq' in incoming data\.",
    ),
    (
        ["attach", "ns/demo", "--path", "{typed}", "--namespace", "infer", "--key", "sequence"],
        r"ERROR: Overlay column 'infer__ll' type mismatch: expected float64, got string\.",
    ),
    (
        ["attach", "ns/demo", "--path", "{unregistered}", "--namespace", "infer", "--key", "sequence"],
        r"ERROR: Overlay column 'infer__zz' not registered under namespace 'infer'\.",
    ),
    (["head", "ns/demo", "-n", "-1"], r"ERROR: head row count must be >= 0\."),
    (["head", "ns/demo", "--columns", "nope"], r"ERROR: Unknown column\(s\) nope"),
    (["info", "ns/missing"], r"ERROR: Dataset not initialized: .*ns/missing"),
]


@pytest.mark.parametrize(("argv", "pattern"), BAD_INPUTS)
def test_bad_input_is_an_error_and_changes_nothing(tree, populated, argv: list[str], pattern: str) -> None:
    cli, root, tmp = populated
    files = {
        "bad_csv": ("bad.csv", "sequence\nACGT\nAAAA,extra\n"),
        "bad_alpha": ("alpha.csv", "sequence\nACGT\nACGZ\n"),
        "dupes": ("dupes.csv", "sequence\nTTTT\nTTTT\n"),
        "overlay": ("o.csv", "sequence,ll\nACGTACGT,1.5\n"),
        "typed": ("t.csv", "sequence,ll\nACGTACGT,high\n"),
        "unregistered": ("u.csv", "sequence,zz\nACGTACGT,1\n"),
    }
    paths = {}
    for key, (name, content) in files.items():
        (tmp / name).write_text(content)
        paths[key] = str(tmp / name)
    before = tree(root)
    code, out = cli(*[a.format(**paths) for a in argv])
    assert code == 2, out
    assert re.search(pattern, out), out
    assert "Traceback" not in out
    assert tree(root) == before


def test_validate_lists_problems_and_exits_2(populated) -> None:
    cli, root, _ = populated
    with open(root / "ns" / "demo" / ".events.log", "ab") as fh:
        fh.write(b"not json\n")
    code, out = cli("validate", "ns/demo")
    assert code == 2
    assert "  - Event log contains malformed JSON at line" in out
    assert "ERROR: Dataset 'ns/demo' failed validation with 1 problem(s)" in out


@pytest.mark.skipif(not VENV_USR.exists(), reason="console script not installed in this interpreter's venv")
def test_console_script_end_to_end(tmp_path: Path) -> None:
    env = {**os.environ, "USR_ROOT": str(tmp_path)}
    ok = subprocess.run([str(VENV_USR), "init", "demo"], capture_output=True, text=True, env=env, timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = subprocess.run(
        [str(VENV_USR), "import", "demo", "--from", "csv", "--path", str(tmp_path / "missing.csv")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert bad.returncode == 2
    assert bad.stdout.startswith("ERROR: Input file not found:") and "Traceback" not in bad.stderr


def _truncate(path: Path, keep: int = 300) -> None:
    path.write_bytes(path.read_bytes()[:keep])


@pytest.mark.parametrize(
    "argv",
    [
        ["head", "ns/demo"],
        ["info", "ns/demo"],
        ["import", "ns/demo", "--from", "csv", "--path", "{seqs}"],
        ["attach", "ns/demo", "--path", "{overlay}", "--namespace", "infer", "--key", "sequence"],
    ],
)
def test_truncated_records_parquet_is_an_error_not_a_traceback(tree, populated, argv: list[str]) -> None:
    cli, root, tmp = populated
    (tmp / "new.csv").write_text("sequence\nTTTTAAAA\n")
    (tmp / "o.csv").write_text("sequence,ll\nACGTACGT,1.5\n")
    _truncate(root / "ns" / "demo" / "records.parquet")
    before = tree(root)
    code, out = cli(*[a.format(seqs=tmp / "new.csv", overlay=tmp / "o.csv") for a in argv])
    assert code == 2, out
    assert re.search(r"ERROR: .*records\.parquet is not a readable parquet file", out), out
    newest = max((root / "ns" / "demo" / "_snapshots").iterdir())
    assert f"Hint: Restore the newest snapshot: `cp {newest} " in out
    assert tree(root) == before


def test_validate_reports_a_truncated_records_parquet(tree, populated) -> None:
    cli, root, _ = populated
    _truncate(root / "ns" / "demo" / "records.parquet")
    before = tree(root)
    code, out = cli("validate", "ns/demo")
    assert code == 2
    assert "records.parquet: not a readable parquet file" in out
    assert tree(root) == before


def test_corrupt_compact_overlay_is_an_error_for_attach_and_a_problem_for_validate(tree, populated) -> None:
    cli, root, tmp = populated
    (tmp / "o.csv").write_text("sequence,ll\nACGTACGT,1.5\n")
    argv = ["attach", "ns/demo", "--path", str(tmp / "o.csv"), "--namespace", "infer", "--key", "sequence"]
    assert cli(*argv)[0] == 0
    _truncate(root / "ns" / "demo" / "_derived" / "infer.parquet", keep=100)
    before = tree(root)
    code, out = cli(*argv, "--allow-overwrite")
    assert code == 2, out
    assert re.search(r"ERROR: Overlay .*infer\.parquet is not a readable parquet file", out), out
    code, out = cli("validate", "ns/demo")
    assert code == 2
    assert re.search(r"  - Overlay .*infer\.parquet is not a readable parquet file", out), out
    assert tree(root) == before


@pytest.mark.parametrize(
    ("option", "value"), [("--max-colwidth", "0"), ("--max-list-items", "-1"), ("--precision", "-2")]
)
def test_head_rejects_out_of_range_display_options(tree, populated, option: str, value: str) -> None:
    cli, root, _ = populated
    before = tree(root)
    code, out = cli("head", "ns/demo", option, value)
    assert code == 2
    assert out.startswith(f"ERROR: head {option} must be >= ")
    assert tree(root) == before


@pytest.mark.skipif(not VENV_USR.exists(), reason="console script not installed in this interpreter's venv")
def test_two_concurrent_imports_lose_no_rows(tmp_path: Path) -> None:
    env = {**os.environ, "USR_ROOT": str(tmp_path / "root")}
    subprocess.run([str(VENV_USR), "init", "demo"], check=True, capture_output=True, env=env, timeout=60)
    bases = "ACGT"
    files = []
    for worker in range(2):
        rows = ["".join(bases[(n >> (2 * k)) & 3] for k in range(12)) + "AC"[worker] for n in range(2000)]
        path = tmp_path / f"w{worker}.csv"
        path.write_text("sequence\n" + "\n".join(rows) + "\n")
        files.append(path)
    procs = [
        subprocess.Popen(
            [str(VENV_USR), "import", "demo", "--from", "csv", "--path", str(p)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for p in files
    ]
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out
    check = subprocess.run(
        [str(VENV_USR), "info", "demo", "--format", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert json.loads(check.stdout)["rows"] == 4000
    valid = subprocess.run(
        [str(VENV_USR), "validate", "demo", "--strict"], capture_output=True, text=True, env=env, timeout=60
    )
    assert valid.returncode == 0, valid.stdout


def test_head_hides_tombstoned_rows_unless_include_deleted(populated) -> None:
    """A tombstone written by the public tool (`_derived/usr.parquet`, usr__deleted true) hides
    the row from head; --include-deleted shows it and the usr__deleted* columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    cli, root, _ = populated
    ds = root / "ns" / "demo"
    ids = pq.read_table(ds / "records.parquet", columns=["id"])["id"].to_pylist()
    (ds / "_derived").mkdir()
    pq.write_table(
        pa.table(
            {
                "id": [ids[0]],
                "usr__deleted": [True],
                "usr__deleted_at": pa.array([1_700_000_000_000_000], pa.timestamp("us", tz="UTC")),
                "usr__deleted_reason": ["bad"],
            }
        ).replace_schema_metadata(
            {
                "usr:overlay_namespace": "usr",
                "usr:overlay_key": "id",
                "usr:registry_hash": registry_hash(root),
            }
        ),
        ds / "_derived" / "usr.parquet",
    )
    code, out = cli("head", "ns/demo", "--columns", "sequence")
    assert code == 0, out
    assert [line.split()[0] for line in out.splitlines()[1:]] == ids[1:]
    code, out = cli(
        "head", "ns/demo", "-n", "1", "--include-deleted", "--columns", "usr__deleted,usr__deleted_at"
    )
    assert code == 0, out
    assert out.splitlines()[1].split() == [ids[0], "true", "2023-11-14T22:13:20+00:00"]
    code, out = cli("head", "ns/demo", "--columns", "usr__deleted")
    assert (
        code == 2 and "ERROR: Tombstone column(s) usr__deleted are shown only with --include-deleted" in out
    )
    code, out = cli("validate", "ns/demo", "--strict")  # the reserved namespace needs no registration
    assert code == 0 and out.startswith("OK: dataset 'ns/demo' is valid"), out


def _one_error(out: str) -> list[str]:
    lines = out.splitlines()
    assert lines[0].startswith("ERROR: ") and "Traceback" not in out
    assert all(line.startswith(("ERROR: ", "Hint: ")) for line in lines), out
    return lines


def test_escape_bytes_from_input_are_shown_escaped(populated) -> None:
    cli, _root, tmp = populated
    bad = tmp / "evil.csv"
    bad.write_bytes(b"sequence\nAC\x1b[2JGT\n")
    code, out = cli("import", "ns/demo", "--from", "csv", "--path", str(bad))
    assert code == 2
    assert "\x1b" not in out
    assert "AC\\x1b[2JGT" in _one_error(out)[0]
    code, out = cli("init", "ns/de\x1bmo")
    assert code == 2 and "\x1b" not in out
    assert _one_error(out)[0] == (
        "ERROR: Dataset id 'ns/de\\x1bmo' contains the control character U+001B. "
        "Use letters, digits, '-', '_' and '.' in dataset ids."
    )


def test_torn_event_log_refuses_import_with_one_error_line(populated) -> None:
    cli, root, tmp = populated
    log = root / "ns" / "demo" / ".events.log"
    keep = log.stat().st_size
    with open(log, "ab") as fh:
        fh.write(b'{"event_version":1,"tim')
    before = (root / "ns" / "demo" / "records.parquet").read_bytes()
    more = tmp / "more.csv"
    more.write_text("sequence\nTTTTTTTT\n")
    code, out = cli("import", "ns/demo", "--from", "csv", "--path", str(more))
    assert code == 2
    lines = _one_error(out)
    assert lines[0].startswith("ERROR: Event log ends with a partial JSONL record: ")
    assert f"`truncate -s {keep} {log}`" in lines[1]
    assert (root / "ns" / "demo" / "records.parquet").read_bytes() == before
    code, out = cli("validate", "ns/demo")
    assert code == 2 and "  - Event log ends with a partial JSONL record" in out
    assert f"`truncate -s {keep} {log}`" in out.splitlines()[-1]


def test_init_over_history_and_validate_without_primary_point_at_snapshots(populated) -> None:
    cli, root, _tmp = populated
    ds = root / "ns" / "demo"
    (ds / "records.parquet").unlink()
    newest = max((ds / "_snapshots").iterdir())
    code, out = cli("validate", "ns/demo")
    assert code == 2
    assert _one_error(out) == [
        f"ERROR: Dataset not initialized: {ds}",
        f"Hint: Restore the newest snapshot: `cp {newest} {ds / 'records.parquet'}` (it holds the rows as "
        "they were before the last rewrite; import anything added after it again), or `usr pull` the "
        "dataset from a remote that has it.",
    ]
    meta = (ds / "meta.md").read_bytes()
    code, out = cli("init", "ns/demo")
    assert code == 2
    assert _one_error(out)[0].startswith(
        f"ERROR: Refusing to init 'ns/demo': {ds} already holds dataset files ("
    )
    assert (ds / "meta.md").read_bytes() == meta


def test_non_utf8_and_genome_inputs_through_the_cli(populated) -> None:
    cli, _root, tmp = populated
    latin = tmp / "latin.csv"
    latin.write_bytes(b"sequence,source\nACGTAA,caf\xe9\n")
    code, out = cli("import", "ns/demo", "--from", "csv", "--path", str(latin))
    assert code == 2
    lines = _one_error(out)
    assert "is not UTF-8 text: byte 0xE9 at byte offset 26 (line 2)" in lines[0]
    assert "iconv -f latin1 -t utf-8" in lines[1]
    genome = tmp / "genome.csv"
    genome.write_text("sequence\n" + "ACGT" * 1_100_000 + "\n")
    code, out = cli("import", "ns/demo", "--from", "csv", "--path", str(genome))
    assert code == 0, out


def test_import_warns_naming_the_dropped_columns(cli, tmp_path: Path) -> None:
    code, out = cli("init", "ns/q")
    assert code == 0, out
    seqs = tmp_path / "quickstart.csv"
    seqs.write_text("sequence,some_other_value\nACGTACGT,1\nAAAACCCC,2\n")
    code, out = cli("import", "ns/q", "--from", "csv", "--path", str(seqs))
    assert code == 0, out
    assert (
        f"WARNING: {seqs}: dropped column(s) that are not base record columns: some_other_value "
        "(attach them as an overlay with `usr attach`)." in out.splitlines()
    )
    assert "Imported 2 row(s) into ns/q (0 skipped)" in out


def test_head_warnings_and_success_lines_escape_input_control_bytes(populated) -> None:
    cli, _root, tmp = populated
    code, out = cli("namespace", "register", "lab", "--columns", "lab__note:string")
    assert code == 0, out
    notes = tmp / "notes.csv"
    notes.write_bytes(b"sequence,note\nACGTACGT,red\x1b[31malert\n")
    code, out = cli("attach", "ns/demo", "--path", str(notes), "--namespace", "lab", "--key", "sequence")
    assert code == 0, out
    code, out = cli("head", "ns/demo", "--columns", "id,lab__note")
    assert code == 0 and "\x1b" not in out
    assert "red\\x1b[31malert" in out
    extra = tmp / "extra\x07.csv"
    extra.write_bytes(b"sequence,odd\x1bcol\nTTTTGGGG,1\n")
    code, out = cli("import", "ns/demo", "--from", "csv", "--path", str(extra))
    assert code == 0, out
    assert "\x1b" not in out and "\x07" not in out
    assert "odd\\x1bcol" in out and "extra\\x07.csv" in out
