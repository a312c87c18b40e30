from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from usrbatch.dataset import schema as S
from usrbatch.dataset.layout import SNAPSHOT_NAME
from usrbatch.dataset.records import import_records, init_dataset
from usrbatch.dataset.ref import DatasetRef, open_dataset
from usrbatch.dataset.registry import load_registry
from usrbatch.errors import DatasetError, SchemaError


def test_init_creates_the_public_layout(root: Path) -> None:
    result = init_dataset(root, "densegen/demo", source="lab", notes="first")
    ref = result.dataset
    assert result.registry_created
    names = sorted(p.relative_to(ref.dir).as_posix() for p in ref.dir.rglob("*") if p.is_file())
    registry = load_registry(root)
    assert names == sorted(
        [
            ".events.lock",
            ".events.log",
            ".usr.lock",
            "meta.md",
            "records.parquet",
            f"_registry/registry.{registry.hash}.yaml",
            *[f"_snapshots/{p.name}" for p in (ref.dir / "_snapshots").iterdir()],
        ]
    )
    snaps = list((ref.dir / "_snapshots").iterdir())
    assert len(snaps) == 1 and SNAPSHOT_NAME.match(snaps[0].name)
    schema = pq.read_schema(ref.records)
    assert schema.remove_metadata() == S.CORE_SCHEMA
    meta = S.read_metadata(schema)
    assert meta[S.META_SCHEMA_VERSION] == "1"
    assert meta[S.META_ID_HASH] == "sha1_utf8_pipe"
    assert meta[S.META_REGISTRY_HASH] == registry.hash
    assert meta[S.META_DATASET_CREATED_AT].endswith("Z")
    assert (ref.dir / f"_registry/registry.{registry.hash}.yaml").read_bytes() == registry.canonical_bytes()
    event = json.loads((ref.dir / ".events.log").read_text())
    assert event["action"] == "init" and event["metrics"] == {"rows": 0}
    assert event["artifacts"] == {"overlays": []} and event["registry_hash"] == registry.hash
    assert "name: densegen/demo" in (ref.dir / "meta.md").read_text()


def test_init_refuses_an_existing_dataset(root: Path, tree) -> None:
    init_dataset(root, "demo")
    before = tree(root)
    with pytest.raises(DatasetError, match="Dataset already exists"):
        init_dataset(root, "demo")
    assert tree(root) == before


@pytest.mark.parametrize("bad", ["", "/abs", "../x", "a/b/c", "archived/x", "a//b"])
def test_bad_dataset_ids_are_rejected_without_writing(root: Path, tree, bad: str) -> None:
    before = tree(root)
    with pytest.raises(DatasetError, match="Dataset id"):
        init_dataset(root, bad)
    assert tree(root) == before


def test_import_computes_ids_lengths_and_keeps_case(dataset: DatasetRef) -> None:
    table = pq.read_table(dataset.records)
    assert table.num_rows == 4
    for row in table.to_pylist():
        expected = hashlib.sha1(f"{row['bio_type']}|{row['sequence']}".encode()).hexdigest()
        assert row["id"] == expected
        assert row["length"] == len(row["sequence"])
        assert row["alphabet"] == "dna_4" and row["source"] == "fixture"
    assert table.schema.field("created_at").type == pa.timestamp("us", tz="UTC")
    assert "acgtACGT" in table["sequence"].to_pylist()
    last = json.loads((dataset.dir / ".events.log").read_text().splitlines()[-1])
    assert last["action"] == "import_rows"
    assert last["metrics"] == {"rows_written": 4, "rows_skipped": 0}


def test_import_strips_whitespace_and_reads_every_format(root: Path, tmp_path: Path) -> None:
    ref = init_dataset(root, "fmt").dataset
    (tmp_path / "a.csv").write_text("sequence,source\n  ACGT  ,csvsrc\n")
    (tmp_path / "a.jsonl").write_text('{"sequence": "CCCC"}\n')
    pq.write_table(pa.table({"sequence": ["GGGG"]}), tmp_path / "a.parquet")
    (tmp_path / "a.fasta").write_text(">one\nTTTT\nTTTT\n>two\nACGA\n")
    for name, fmt in (("a.csv", "csv"), ("a.jsonl", "jsonl"), ("a.parquet", "parquet"), ("a.fasta", "fasta")):
        import_records(ref, tmp_path / name, fmt=fmt)
    table = pq.read_table(ref.records)
    assert table["sequence"].to_pylist() == ["ACGT", "CCCC", "GGGG", "TTTTTTTT", "ACGA"]
    assert table["source"].to_pylist()[0] == "csvsrc"
    assert table["id"][0].as_py() == S.compute_id("dna", "ACGT")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("sequence,x\nACGT,1\nAAAA,2,3\n", r"Malformed CSV .*a\.csv: .*Expected 2 columns, got 3"),
        ("name\nACGT\n", r"a\.csv has no 'sequence' column"),
        (
            "sequence\nACGT\nACGX\n",
            r"a\.csv: 1 sequence\(s\) contain symbols outside alphabet dna_4 .*rows: 2",
        ),
        (
            "sequence\nACGT\nacgt\nACGT\n",
            r"a\.csv: duplicate sequences: 1 id\(s\) repeated\. Sample: .* \(rows 1, 3\)",
        ),
        ("sequence\nACGT\n\nAAAA\n", None),
        ("sequence\nACGT\n  \n", r"a\.csv: 1 row\(s\) have an empty sequence \(rows: 2\)"),
        ('sequence\nACGT\n""\n', r"a\.csv: 1 row\(s\) have an empty sequence \(rows: 2\)"),
        (
            "Sequence,extra\nACGT,1\n",
            r"a\.csv has a column 'Sequence' that looks like the core column 'sequence'",
        ),
        (
            "sequence,Bio-Type\nACGT,dna\n",
            r"a\.csv has a column 'Bio-Type' that looks like the core column 'bio_type'",
        ),
        ("", r"Malformed CSV .*a\.csv: the file is empty"),
    ],
)
def test_bad_import_input_changes_nothing(
    dataset: DatasetRef, tmp_path: Path, tree, content: str, message: str | None
) -> None:
    path = tmp_path / "a.csv"
    path.write_text(content)
    before = tree(dataset.root)
    if message is None:  # blank lines are skipped by the CSV reader: a valid file
        result = import_records(dataset, path)
        assert result.rows_written == 2
        return
    with pytest.raises(SchemaError, match=message):
        import_records(dataset, path)
    assert tree(dataset.root) == before


def test_import_rejects_existing_ids_unless_skipping(dataset: DatasetRef, tmp_path: Path, tree) -> None:
    path = tmp_path / "again.csv"
    path.write_text("sequence\nACGTACGT\nTTTTTTTT\n")
    before = tree(dataset.root)
    with pytest.raises(SchemaError, match=r"1 row\(s\) are already in dataset 'ns/demo' \(rows: 1;"):
        import_records(dataset, path)
    assert tree(dataset.root) == before
    result = import_records(dataset, path, skip_existing=True)
    assert (result.rows_written, result.rows_skipped) == (1, 1)


def test_import_rejects_a_wrong_given_id_and_unknown_alphabet(dataset: DatasetRef, tree) -> None:
    before = tree(dataset.root)
    with pytest.raises(SchemaError, match=r"id\(s\) are not sha1"):
        import_records(dataset, [{"sequence": "TTTT", "id": "deadbeef"}])
    with pytest.raises(SchemaError, match="Unknown alphabet 'dna_9'"):
        import_records(dataset, [{"sequence": "TTTT"}], alphabet="dna_9")
    with pytest.raises(SchemaError, match="alphabet 'rna_4' does not fit bio_type 'dna'"):
        import_records(dataset, [{"sequence": "UUUU"}], alphabet="rna_4")
    assert tree(dataset.root) == before


def test_import_into_missing_dataset(root: Path) -> None:
    with pytest.raises(DatasetError, match="Dataset not initialized"):
        import_records(open_dataset(root, "nope"), [{"sequence": "ACGT"}])


def test_import_100k_rows_writes_every_row(root: Path, tmp_path: Path) -> None:
    """Correctness at scale; its speed is measured by bench/bench_scaling.py, not asserted here."""
    import random

    rng = random.Random(7)
    seqs = list({"".join(rng.choice("ACGT") for _ in range(40)) for _ in range(100_000)})
    path = tmp_path / "big.csv"
    path.write_text("sequence\n" + "\n".join(seqs) + "\n")
    ref = init_dataset(root, "big").dataset
    result = import_records(ref, path)
    assert result.rows_written == len(seqs)
    assert pq.read_table(ref.records, columns=["sequence"])["sequence"].to_pylist() == seqs


def test_import_and_attach_refuse_a_torn_event_log_before_writing(
    dataset: DatasetRef, tmp_path: Path, tree
) -> None:
    from usrbatch.dataset.overlays import attach
    from usrbatch.errors import EventLogError

    log = dataset.dir / ".events.log"
    keep = log.stat().st_size
    with open(log, "ab") as fh:
        fh.write(b'{"event_version":1,"acti')
    scores = tmp_path / "scores.csv"
    scores.write_text(f"id,infer__ll\n{S.compute_id('dna', 'ACGTACGT')},1.5\n")
    before = tree(dataset.root)
    with pytest.raises(EventLogError, match="Event log ends with a partial JSONL record"):
        import_records(dataset, [{"sequence": "TTTTAAAA"}])
    with pytest.raises(EventLogError, match="partial JSONL record") as info:
        attach(dataset, scores, "infer")
    assert f"truncate -s {keep} {log}" in (info.value.hint or "")
    assert tree(dataset.root) == before
    log.write_bytes(log.read_bytes()[:keep])
    import_records(dataset, [{"sequence": "TTTTAAAA"}])
    attach(dataset, scores, "infer")
    assert [json.loads(line)["action"] for line in log.read_text().splitlines()[-2:]] == [
        "import_rows",
        "attach",
    ]


def test_init_refuses_a_directory_with_dataset_files_and_names_them(root: Path, tree) -> None:
    ref = init_dataset(root, "ns/old").dataset
    import_records(ref, [{"sequence": "ACGT"}])
    ref.records.unlink()  # lost primary; history, meta.md and snapshots remain
    before = tree(root)
    with pytest.raises(DatasetError) as info:
        init_dataset(root, "ns/old")
    message = info.value.message
    assert message.startswith(f"Refusing to init 'ns/old': {ref.dir} already holds dataset files (")
    for name in (".events.log", "_registry/", "_snapshots/", "meta.md"):
        assert name in message
    newest = max((ref.dir / "_snapshots").iterdir())
    assert f"cp {newest} {ref.records}" in (info.value.hint or "")
    assert tree(root) == before
    (root / "other").mkdir()
    (root / "other" / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match=r"already holds dataset files \(notes\.txt\)") as info:
        init_dataset(root, "other")
    assert "move those files out" in (info.value.hint or "")
    (root / "locks_only").mkdir()
    (root / "locks_only" / ".usr.lock").write_bytes(b"")  # runtime leftovers do not count
    init_dataset(root, "locks_only")


def test_missing_primary_hint_points_at_the_newest_snapshot(root: Path) -> None:
    ref = init_dataset(root, "gone").dataset
    import_records(ref, [{"sequence": "ACGT"}])
    ref.records.unlink()
    with pytest.raises(DatasetError) as info:
        ref.require()
    newest = max((ref.dir / "_snapshots").iterdir())
    assert info.value.message == f"Dataset not initialized: {ref.dir}"
    assert f"cp {newest} {ref.records}" in (info.value.hint or "") and "init" not in (info.value.hint or "")
    with pytest.raises(DatasetError) as info:
        open_dataset(root, "never").require()
    assert "init never" in (info.value.hint or "")


@pytest.mark.parametrize("column", ["id", "sequence"])
def test_int_core_column_in_records_is_a_clear_error(
    dataset: DatasetRef, tmp_path: Path, tree, column: str
) -> None:
    from usrbatch.dataset.overlays import attach

    table = pq.read_table(dataset.records)
    broken = table.set_column(
        table.schema.get_field_index(column), column, pa.array(range(table.num_rows), pa.int64())
    )
    pq.write_table(broken.replace_schema_metadata(table.schema.metadata), dataset.records)
    scores = tmp_path / "scores.csv"
    scores.write_text("sequence,infer__ll\nACGTACGT,1.5\n")
    before = tree(dataset.root)
    with pytest.raises(DatasetError, match=rf"column '{column}' is int64, but USR stores it as string"):
        import_records(dataset, [{"sequence": "TTTTAAAA"}])
    with pytest.raises(DatasetError, match=rf"column '{column}' is int64"):
        attach(dataset, scores, "infer", key="sequence")
    assert tree(dataset.root) == before


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("demo\x1b[31m", "control character U+001B"),
        ("ns/de\x07mo", "control character U+0007"),
        ("ns/a\u202eb", "control character U+202E"),
        ("_snapshots", "'_snapshots', a name reserved for dataset internals"),
        ("demo/_derived", "'_derived', a name reserved"),
        ("_registry/x", "'_registry', a name reserved"),
        ("ns/.hidden", "'.hidden', a name reserved"),
        (".events.log", "'.events.log', a name reserved"),
        ("demo/records.parquet", "'records.parquet', a name reserved"),
    ],
)
def test_ids_with_control_characters_or_internal_names_are_refused(
    root: Path, tree, bad: str, message: str
) -> None:
    before = tree(root)
    with pytest.raises(DatasetError, match=re.escape(message)):
        init_dataset(root, bad)
    assert tree(root) == before


def test_int_id_or_sequence_in_an_input_file_is_a_clear_error(
    dataset: DatasetRef, tmp_path: Path, tree
) -> None:
    before = tree(dataset.root)
    ints = tmp_path / "ints.parquet"
    pq.write_table(pa.table({"sequence": [1, 2]}), ints)
    with pytest.raises(SchemaError, match=r"Column 'sequence' in .*ints\.parquet must be text, got int64"):
        import_records(dataset, ints)
    ids = tmp_path / "ids.jsonl"
    ids.write_text('{"sequence": "ACGTAC", "id": 5}\n')
    with pytest.raises(SchemaError, match=r"drop the id column and let usr compute ids\.$"):
        import_records(dataset, ids)
    assert tree(dataset.root) == before


def test_import_drops_non_base_columns_and_names_them(dataset: DatasetRef, tmp_path: Path) -> None:
    """The public quickstart CSV has an extra column: the public `import` drops it; so do we."""
    path = tmp_path / "quickstart.csv"
    path.write_text("sequence,some_other_value,source\nTTTTGGGG,1.5,lab\nCCCCAAAA,2.5,lab\n")
    before = pq.read_schema(dataset.records).names
    result = import_records(dataset, path)
    assert result.rows_written == 2 and result.dropped_columns == ("some_other_value",)
    assert pq.read_schema(dataset.records).names == before


@pytest.mark.parametrize(
    ("header", "named"),
    [(",sequence,", "''"), ("sequence,rank,source,rank", "'rank'"), ("sequence,sequence", "'sequence'")],
)
def test_import_refuses_repeated_column_names_without_writing(
    root: Path, tmp_path: Path, tree, header: str, named: str
) -> None:
    """Found by the R7 fuzz drill: a repeated header name used to end in a KeyError traceback."""
    ref = init_dataset(root, "dups").dataset
    width = len(header.split(","))
    (tmp_path / "dups.csv").write_text(header + "\n" + ",".join(["ACGT"] * width) + "\n")
    before = tree(root)
    with pytest.raises(SchemaError, match=f"more than one column named {named}"):
        import_records(ref, tmp_path / "dups.csv", fmt="csv")
    assert tree(root) == before
