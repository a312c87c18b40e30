from __future__ import annotations

import collections
import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from usrbatch.dataset import schema as S
from usrbatch.dataset.overlays import attach, read_dataset, write_overlay_part
from usrbatch.dataset.records import import_records, init_dataset
from usrbatch.dataset.ref import DatasetRef, open_dataset
from usrbatch.dataset.registry import load_registry, register_namespace
from usrbatch.errors import DatasetError, NamespaceError, SchemaError


def _seqs(ref: DatasetRef) -> list[str]:
    return pq.read_table(ref.records, columns=["sequence"])["sequence"].to_pylist()


def _ids(ref: DatasetRef) -> list[str]:
    return pq.read_table(ref.records, columns=["id"])["id"].to_pylist()


def _events(ref: DatasetRef) -> list[dict]:
    return [json.loads(line) for line in (ref.dir / ".events.log").read_text().splitlines()]


def test_write_overlay_part_layout_metadata_and_event(dataset: DatasetRef) -> None:
    ids = _ids(dataset)
    result = write_overlay_part(dataset, "infer", [{"id": ids[0], "ll": 0.5, "infer__v": [1.0, 2.0]}])
    assert result.as_part and result.rows_written == 1
    assert result.path.parent == dataset.dir / "_derived" / "infer"
    name = result.path.name
    assert name.startswith("part-") and name.endswith(".parquet")
    stamp, hexid = name[len("part-") : -len(".parquet")].split("-")
    assert len(stamp) == len("20260101T000000000000Z") and stamp.endswith("Z") and len(hexid) == 32
    table = pq.read_table(result.path)
    assert table.schema.names == ["id", "infer__ll", "infer__v"]
    assert table.schema.field("infer__v").type == pa.list_(pa.float64())
    registry = load_registry(dataset.root)
    meta = S.read_metadata(table.schema)
    assert meta[S.META_OVERLAY_NAMESPACE] == "infer" and meta[S.META_OVERLAY_KEY] == "id"
    assert meta[S.META_REGISTRY_HASH] == registry.hash
    assert meta[S.META_NAMESPACE_CONTRACT_HASH] == registry.namespaces["infer"].contract_hash
    assert meta[S.META_OVERLAY_CREATED_AT].endswith("Z")
    last = _events(dataset)[-1]
    assert last["action"] == "write_overlay_part"
    assert last["args"]["namespace"] == "infer" and last["args"]["rows_written"] == 1
    assert set(last["args"]) >= {
        "namespace",
        "key",
        "columns",
        "rows_incoming",
        "rows_matched",
        "rows_written",
        "rows_missing",
        "allow_missing",
    }
    assert last["fingerprint"]["rows"] == 1


def test_overlay_reads_are_last_writer_wins_per_cell(dataset: DatasetRef) -> None:
    ids = _ids(dataset)
    write_overlay_part(dataset, "infer", [{"id": ids[0], "ll": 1.0, "label": "a"}, {"id": ids[1], "ll": 2.0}])
    write_overlay_part(dataset, "infer", [{"id": ids[0], "ll": 10.0}])
    write_overlay_part(dataset, "infer", [{"id": ids[1], "label": "b"}])
    rows = {r["id"]: r for r in read_dataset(dataset, ["infer__ll", "infer__label"]).to_pylist()}
    assert rows[ids[0]]["infer__ll"] == 10.0 and rows[ids[0]]["infer__label"] == "a"
    assert rows[ids[1]]["infer__ll"] == 2.0 and rows[ids[1]]["infer__label"] == "b"
    assert rows[ids[2]]["infer__ll"] is None


def test_parts_ordered_by_created_at_then_filename(dataset: DatasetRef) -> None:
    ids = _ids(dataset)
    first = write_overlay_part(dataset, "infer", [{"id": ids[0], "ll": 1.0}]).path
    second = write_overlay_part(dataset, "infer", [{"id": ids[0], "ll": 2.0}]).path
    # make the older part claim a newer creation time: it must win despite its name
    table = pq.read_table(first)
    meta = dict(table.schema.metadata)
    meta[S.META_OVERLAY_CREATED_AT.encode()] = b"2999-01-01T00:00:00.000000Z"
    pq.write_table(table.replace_schema_metadata(meta), first)
    assert second.name > first.name
    assert read_dataset(dataset, ["infer__ll"])["infer__ll"][0].as_py() == 1.0


def test_attach_writes_compact_overlay_and_merges(dataset: DatasetRef, tmp_path: Path) -> None:
    seqs = _seqs(dataset)
    src = tmp_path / "o.csv"
    src.write_text(f'sequence,ll,v\n{seqs[0]},1.5,"[1, 2]"\n{seqs[1]},2,\n')
    result = attach(dataset, src, "infer", key="sequence")
    assert not result.as_part and result.path == dataset.dir / "_derived" / "infer.parquet"
    assert result.rows_matched == 2
    src2 = tmp_path / "o2.jsonl"
    src2.write_text(json.dumps({"sequence": seqs[1], "ll": 7.0}) + "\n")
    with pytest.raises(SchemaError, match=r"^Columns already exist: infer__ll\. Use --allow-overwrite\.$"):
        attach(dataset, src2, "infer", key="sequence")
    attach(dataset, src2, "infer", key="sequence", allow_overwrite=True)
    table = read_dataset(dataset, ["sequence", "infer__ll", "infer__v"]).to_pylist()
    by_seq = {r["sequence"]: r for r in table}
    assert by_seq[seqs[0]]["infer__ll"] == 1.5 and by_seq[seqs[0]]["infer__v"] == [1.0, 2.0]
    assert by_seq[seqs[1]]["infer__ll"] == 7.0
    actions = [e["action"] for e in _events(dataset)]
    assert actions.count("attach") == 2
    assert "Attached columns under 'infer' (1 row match)" in (dataset.dir / "meta.md").read_text()


def test_attach_writes_a_part_when_parts_exist_and_moves_compact(dataset: DatasetRef, tmp_path: Path) -> None:
    ids = _ids(dataset)
    src = tmp_path / "o.csv"
    src.write_text(f"id,ll\n{ids[0]},1.0\n")
    attach(dataset, src, "infer")
    write_overlay_part(dataset, "infer", [{"id": ids[1], "ll": 2.0}])
    assert not (dataset.dir / "_derived" / "infer.parquet").exists()  # moved into the part dir
    assert len(list((dataset.dir / "_derived" / "infer").glob("part-*.parquet"))) == 2
    src.write_text(f"id,ll\n{ids[0]},3.0\n")
    result = attach(dataset, src, "infer")
    assert result.as_part
    values = read_dataset(dataset, ["infer__ll"])["infer__ll"].to_pylist()
    assert values[:2] == [3.0, 2.0]


def test_registry_edit_refreezes_primary_on_next_write(dataset: DatasetRef) -> None:
    old = S.read_metadata(pq.read_schema(dataset.records))[S.META_REGISTRY_HASH]
    register_namespace(dataset.root, "other", "other__x:int8")
    write_overlay_part(dataset, "infer", [{"id": _ids(dataset)[0], "ll": 1.0}])
    new = load_registry(dataset.root).hash
    assert new != old
    assert S.read_metadata(pq.read_schema(dataset.records))[S.META_REGISTRY_HASH] == new
    assert (dataset.dir / "_registry" / f"registry.{new}.yaml").is_file()
    freeze = [e for e in _events(dataset) if e["action"] == "registry_freeze"][-1]
    assert freeze["args"]["registry_hash"] == new and freeze["args"]["auto"] is True


# Each case: (file name, content, attach kwargs, expected error class, exact message or regex)
ATTACH_ERRORS = [
    (
        "o.csv",
        "id,ll\n{id0},1\n",
        {"namespace": "Infer"},
        NamespaceError,
        "Invalid namespace. Use lowercase letters, digits, and underscores, starting with a letter.",
    ),
    (
        "o.csv",
        "id,ll\n{id0},1\n",
        {"namespace": "usr_state"},
        NamespaceError,
        "Namespace 'usr_state' is reserved.",
    ),
    ("o.csv", "id,ll\n{id0},1\n", {"key": "name"}, SchemaError, "Unsupported join key 'name'."),
    ("o.txt", "id,ll\n{id0},1\n", {}, SchemaError, r"re:Unsupported input format"),
    ("o.csv", "ident,ll\n{id0},1\n", {}, SchemaError, "Missing key column 'id' in incoming data."),
    (
        "o.csv",
        "id,ll\n{id0},1\n",
        {"columns": ["ll", "bad_field"]},
        SchemaError,
        r"re:Column\(s\) 'bad_field' named in --columns are not in the input file .*o\.csv",
    ),
    (
        "o.csv",
        'id,v\n{id0},"[1, 2"\n',
        {},
        SchemaError,
        "Column 'v' row 1: invalid JSON-like value. Provide valid JSON or pass --no-parse-json.",
    ),
    (
        "o.csv",
        "id,densegen__x\n{id0},1\n",
        {},
        SchemaError,
        "Column 'densegen__x' does not belong to namespace 'infer'.",
    ),
    (
        "o.csv",
        "id,ll\n{id0},1\n,2\n",
        {},
        SchemaError,
        r"re:^1 row\(s\) have missing key values \(rows: 2\)\.$",
    ),
    (
        "o.csv",
        "id,ll\n{id0},1\n{id0},2\n",
        {},
        SchemaError,
        r"re:^Duplicate keys in attachment input: 1 key\(s\) repeated\. Sample: \w+ \(rows 1,2\)\.$",
    ),
    (
        "o.csv",
        "id,ll\n{id0},1\nnot-an-id,2\n",
        {},
        SchemaError,
        r"re:^1 row\(s\) reference keys not present in the dataset \(sample: not-an-id\)\.$",
    ),
    (
        "o.csv",
        "id,ghost__a\n{id0},1\n",
        {"namespace": "ghost"},
        NamespaceError,
        "Namespace 'ghost' is not registered. Register it with `usr namespace register ...`.",
    ),
    (
        "o.csv",
        "id,nope\n{id0},1\n",
        {},
        SchemaError,
        "Overlay column 'infer__nope' not registered under namespace 'infer'.",
    ),
    (
        "o.csv",
        "id,ll\n{id0},abc\n",
        {},
        SchemaError,
        "Overlay column 'infer__ll' type mismatch: expected float64, got string.",
    ),
    (
        "o.csv",
        'id,v\n{id0},"[""a""]"\n',
        {},
        SchemaError,
        r"re:^Overlay column 'infer__v' type mismatch: expected list<float64>, got string",
    ),
    (
        "o.csv",
        "id,ll\n{id0},1,2\n",
        {},
        SchemaError,
        r"re:^Malformed CSV .*o\.csv: .*Expected 2 columns, got 3",
    ),
]


@pytest.mark.parametrize(("name", "content", "kwargs", "error", "message"), ATTACH_ERRORS)
def test_attach_rejections_change_nothing(
    dataset: DatasetRef, tmp_path: Path, tree, name, content, kwargs, error, message
) -> None:
    ids = _ids(dataset)
    src = tmp_path / name
    src.write_text(content.format(id0=ids[0]))
    args = {"namespace": "infer", **kwargs}
    namespace = args.pop("namespace")
    before = tree(dataset.root)
    with pytest.raises(error) as info:
        attach(dataset, src, namespace, **args)
    if message.startswith("re:"):
        assert re.search(message[3:], str(info.value)), str(info.value)
    else:
        assert str(info.value) == message
    assert tree(dataset.root) == before


def test_attach_to_uninitialized_dataset(root: Path, tmp_path: Path) -> None:
    src = tmp_path / "o.csv"
    src.write_text("id,ll\nx,1\n")
    with pytest.raises(DatasetError, match=r"^Dataset not initialized: .*nope$"):
        attach(open_dataset(root, "nope"), src, "infer")


def test_allow_missing_skips_unknown_keys(dataset: DatasetRef, tmp_path: Path) -> None:
    src = tmp_path / "o.csv"
    src.write_text(f"id,ll\n{_ids(dataset)[0]},1\nnot-an-id,2\n")
    result = attach(dataset, src, "infer", allow_missing=True)
    assert (result.rows_incoming, result.rows_matched, result.rows_missing, result.rows_written) == (
        2,
        1,
        1,
        1,
    )
    assert pq.read_table(result.path).num_rows == 1


def test_write_overlay_part_rejects_duplicates_and_missing(dataset: DatasetRef, tree) -> None:
    ids = _ids(dataset)
    before = tree(dataset.root)
    with pytest.raises(SchemaError, match=rf"^Overlay part has duplicate keys for '{ids[0]}'\."):
        write_overlay_part(dataset, "infer", [{"id": ids[0], "ll": 1.0}, {"id": ids[0], "ll": 2.0}])
    with pytest.raises(SchemaError, match="reference keys not present"):
        write_overlay_part(dataset, "infer", [{"id": "zzz", "ll": 1.0}])
    with pytest.raises(SchemaError, match="type mismatch: expected int64, got float64"):
        write_overlay_part(dataset, "infer", [{"id": ids[0], "n": 1.5}])
    assert tree(dataset.root) == before


def test_sequence_key_requires_single_bio_type(dataset: DatasetRef, tmp_path: Path) -> None:
    seqs = _seqs(dataset)
    import_records(dataset, [{"sequence": "ACGU"}], bio_type="rna", alphabet="rna_4")
    src = tmp_path / "o.csv"
    src.write_text(f"sequence,ll\n{seqs[0]},1\n")
    with pytest.raises(SchemaError, match=r"^Attach by sequence requires dataset with a single bio_type\.$"):
        attach(dataset, src, "infer", key="sequence")


def test_attach_100k_rows_matches_every_row(root: Path, tmp_path: Path) -> None:
    """Correctness at scale; its speed is measured by bench/bench_scaling.py, not asserted here."""
    import random

    rng = random.Random(3)
    seqs = list({"".join(rng.choice("ACGT") for _ in range(30)) for _ in range(100_000)})
    ref = init_dataset(root, "big").dataset
    register_namespace(root, "infer", "infer__ll:float64,infer__v:list<float64>")
    import_records(ref, pa.table({"sequence": seqs}))
    src = tmp_path / "o.csv"
    src.write_text("sequence,ll\n" + "\n".join(f"{s},{i / 7}" for i, s in enumerate(seqs)) + "\n")
    result = attach(ref, src, "infer", key="sequence")
    write_overlay_part(ref, "infer", pa.table({"id": _ids(ref), "infer__v": [[1.0, 2.0]] * len(seqs)}))
    table = read_dataset(ref)
    assert result.rows_matched == len(seqs) and table.num_rows == len(seqs)
    assert table["infer__ll"].to_pylist() == [i / 7 for i in range(len(seqs))]
    assert table["infer__v"].to_pylist() == [[1.0, 2.0]] * len(seqs)


def test_blank_csv_cells_are_null(dataset: DatasetRef, tmp_path: Path) -> None:
    ids = _ids(dataset)
    src = tmp_path / "o.csv"
    src.write_text(f"id,label,ll\n{ids[0]},,1\n{ids[1]},x,\n")
    attach(dataset, src, "infer")
    rows = read_dataset(dataset, ["infer__label", "infer__ll"]).to_pylist()
    assert (rows[0]["infer__label"], rows[0]["infer__ll"]) == (None, 1.0)
    assert (rows[1]["infer__label"], rows[1]["infer__ll"]) == ("x", None)


def test_write_overlay_part_accepts_a_dataset_directory(dataset: DatasetRef) -> None:
    result = write_overlay_part(str(dataset.dir), "infer", [{"id": _ids(dataset)[0], "ll": 4.0}])
    assert result.dataset == dataset
    assert read_dataset(dataset.dir, ["infer__ll"])["infer__ll"][0].as_py() == 4.0
    last = _events(dataset)[-1]
    assert last["dataset"] == {"name": "ns/demo", "root": str(dataset.root)}


def _write_parts(directory: str, ids: list[str], count: int) -> None:
    ref = open_dataset(Path(directory).parent.parent, "ns/demo")
    for i in range(count):
        write_overlay_part(ref, "infer", pa.table({"id": ids, "ll": [float(i)] * len(ids)}))


def test_write_overlay_part_concurrent_with_attach_loses_nothing(dataset: DatasetRef, tmp_path: Path) -> None:
    import multiprocessing as mp

    from usrbatch.dataset.catalog import validate_dataset

    ids = _ids(dataset)
    source = tmp_path / "labels.csv"
    source.write_text("id,label\n" + "".join(f"{i},L{n}\n" for n, i in enumerate(ids)))
    proc = mp.get_context("spawn").Process(target=_write_parts, args=(str(dataset.dir), ids[:2], 15))
    proc.start()
    for _ in range(5):
        attach(dataset, source, "infer", allow_overwrite=True)
    proc.join(300)
    assert proc.exitcode == 0
    table = read_dataset(dataset, ["infer__ll", "infer__label"])
    assert table["infer__label"].to_pylist() == [f"L{n}" for n in range(len(ids))]
    assert table["infer__ll"].to_pylist()[:2] == [14.0, 14.0]
    actions = [e["action"] for e in _events(dataset)]
    assert actions.count("write_overlay_part") == 15 and actions.count("attach") == 5
    report = validate_dataset(dataset)
    assert report.errors == [] and report.warnings == []


def test_read_dataset_over_many_parts_opens_each_part_a_bounded_number_of_times(
    dataset: DatasetRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Linear in the parts, counted in file opens (bench/bench_scaling.py times it)."""
    ids = _ids(dataset)
    for i in range(200):
        write_overlay_part(dataset, "infer", pa.table({"id": [ids[i % len(ids)]], "n": [i]}))
    opened: collections.Counter[str] = collections.Counter()
    real_file, real_schema = pq.ParquetFile, pq.read_schema

    def parquet_file(source, *args, **kwargs):
        opened[str(source)] += 1
        return real_file(source, *args, **kwargs)

    def read_schema(where, *args, **kwargs):
        opened[str(where)] += 1
        return real_schema(where, *args, **kwargs)

    monkeypatch.setattr(pq, "ParquetFile", parquet_file)
    monkeypatch.setattr(pq, "read_schema", read_schema)
    table = read_dataset(dataset, ["infer__n"])
    assert table["infer__n"].to_pylist() == [196, 197, 198, 199]
    parts = sorted(str(p) for p in (dataset.dir / "_derived" / "infer").glob("part-*.parquet"))
    assert len(parts) == 200 and set(parts) <= set(opened)
    assert max(opened[p] for p in parts) <= 2, opened  # its schema, then its rows: never re-read per part
    assert sum(opened.values()) <= 2 * len(parts) + 2, opened
