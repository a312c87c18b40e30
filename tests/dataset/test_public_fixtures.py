"""Datasets the public USR tool wrote (tests/fixtures/public-usr/), read by our `usr`: validate
reaches the public verdict for every dataset and --registry-mode (the README's table); head, info
and events tail read every dataset; attach extends the public overlays (sequence-keyed compact and
id-keyed parts) so that the overlays stay what the public tool expects."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
from public_usr import DATASETS, MODES, public_verdicts, unpack  # noqa: E402

from usrbatch.cli.common import run_cli  # noqa: E402
from usrbatch.cli.usr_main import usr  # noqa: E402

VERDICTS = public_verdicts()


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both public roots, unpacked once (the read-only tests do not change them)."""
    base = tmp_path_factory.mktemp("public-usr")
    return {name: unpack(name, base) for name in ("root", "root_bad")}


def run(root: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = run_cli(usr, ["--root", str(root), *argv])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.parametrize("root_name", ["root", "root_bad"])
@pytest.mark.parametrize("dataset", DATASETS)
def test_validate_reaches_the_public_verdict_in_every_registry_mode(roots, capsys, root_name, dataset):
    for mode in MODES:
        code, out = run(roots[root_name], capsys, "validate", dataset, "--registry-mode", mode)
        expected = VERDICTS[(root_name, dataset, mode)]
        assert (code == 0) is expected, f"{root_name} {dataset} --registry-mode {mode}: {out}"
        if not expected:
            assert code == 2 and "Overlay registry_hash mismatch for " in out, out
    # The default mode is `current`.
    code, _out = run(roots[root_name], capsys, "validate", dataset)
    assert (code == 0) is VERDICTS[(root_name, dataset, "current")]


def test_unknown_registry_mode_is_refused_naming_the_choices(roots, capsys):
    code, out = run(roots["root"], capsys, "validate", "flat1", "--registry-mode", "latest")
    assert code == 2 and "namespace-either" in out


@pytest.mark.parametrize("dataset", DATASETS)
def test_head_info_and_events_read_public_datasets(roots, capsys, dataset):
    root = roots["root"]
    rows = pq.ParquetFile(root / dataset / "records.parquet").metadata.num_rows
    code, out = run(root, capsys, "head", dataset, "-n", "3")
    assert code == 0, out
    assert "Traceback" not in out and len(out.strip().splitlines()) == 1 + min(3, rows)
    code, out = run(root, capsys, "info", dataset, "--format", "json")
    assert code == 0, out
    info = json.loads(out)
    assert info["rows"] == rows and info["dataset_id"] == dataset
    code, out = run(root, capsys, "events", "tail", dataset, "--n", "2")
    assert code == 0, out
    lines = out.strip().splitlines()
    log = (root / dataset / ".events.log").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [json.loads(line) for line in log[-2:]]


def test_head_shows_public_overlays_and_hides_the_tombstoned_row(roots, capsys):
    root = roots["root"]
    ds = root / "densegen/seqkey"
    overlay = pq.read_table(ds / "_derived/mock.parquet")
    assert overlay.schema.metadata[b"usr:overlay_key"] == b"sequence"
    deleted = pq.read_table(ds / "_derived/usr.parquet").to_pylist()
    gone = {r["id"] for r in deleted if r["usr__deleted"]}
    code, out = run(
        root, capsys, "head", "densegen/seqkey", "-n", "100", "--columns", "mock__score,mock__tag"
    )
    assert code == 0, out
    shown = {line.split()[0] for line in out.strip().splitlines()[1:]}
    records = pq.read_table(ds / "records.parquet")
    assert shown == set(records["id"].to_pylist()) - gone and gone
    by_seq = {r["sequence"]: r["mock__tag"] for r in overlay.to_pylist()}
    first = records.to_pylist()[1]  # the first row is the tombstoned one
    line = next(x for x in out.splitlines() if x.startswith(first["id"]))
    assert by_seq[first["sequence"].strip()] in line.split()
    code, out = run(root, capsys, "head", "densegen/parts", "-n", "2", "--columns", "infer__ll,infer__vec")
    assert code == 0 and "vec[" in out, out


def _attach_csv(tmp_path: Path, header: str, rows: list[str]) -> Path:
    path = tmp_path / "scores.csv"
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def test_attach_by_sequence_extends_the_public_sequence_keyed_overlay(tmp_path, capsys):
    root = unpack("root", tmp_path)
    ds = root / "densegen/seqkey"
    before = pq.read_table(ds / "_derived/mock.parquet")
    seqs = pq.read_table(ds / "records.parquet")["sequence"].to_pylist()
    csv = _attach_csv(tmp_path, "sequence,mock__score", [f"{seqs[2]},0.5", f"{seqs[3]},0.25"])
    code, out = run(
        root, capsys, "attach", "densegen/seqkey", "--path", str(csv), "--namespace", "mock",
        "--key", "sequence", "--allow-overwrite",
    )  # fmt: skip
    assert code == 0, out
    after = pq.read_table(ds / "_derived/mock.parquet")
    assert after.schema.metadata[b"usr:overlay_key"] == b"sequence"
    assert after.column_names == before.column_names  # still [sequence, mock__score, mock__tag]
    rows = {r["sequence"]: r for r in after.to_pylist()}
    assert rows[seqs[2].strip()]["mock__score"] == 0.5 and rows[seqs[3].strip()]["mock__score"] == 0.25
    kept = {r["sequence"]: r for r in before.to_pylist()}
    assert rows[seqs[2].strip()]["mock__tag"] == kept[seqs[2].strip()]["mock__tag"]  # other cells kept
    assert after.num_rows == before.num_rows
    # An id-keyed write into this sequence-keyed overlay is refused, as the public tool refuses it.
    ids = pq.read_table(ds / "records.parquet")["id"].to_pylist()
    csv = _attach_csv(tmp_path, "id,mock__score", [f"{ids[2]},0.75"])
    snapshot = (ds / "_derived/mock.parquet").read_bytes()
    code, out = run(
        root, capsys, "attach", "densegen/seqkey", "--path", str(csv), "--namespace", "mock",
        "--allow-overwrite",
    )  # fmt: skip
    assert code == 2 and "Overlay key mismatch for namespace 'mock': existing=sequence new=id" in out
    assert (ds / "_derived/mock.parquet").read_bytes() == snapshot
    code, out = run(root, capsys, "validate", "densegen/seqkey")
    assert code == 0, out


def test_attach_extends_the_public_parts_overlay_and_keeps_its_digest_ledger_current(tmp_path, capsys):
    root = unpack("root", tmp_path)
    ds = root / "densegen/parts"
    ledger_path = ds / "_derived/infer/digest_ledger.json"
    before = json.loads(ledger_path.read_text())
    ids = pq.read_table(ds / "records.parquet")["id"].to_pylist()
    csv = _attach_csv(tmp_path, "id,infer__ll", [f"{ids[0]},-1.5", f"{ids[1]},-2.5"])
    code, out = run(root, capsys, "attach", "densegen/parts", "--path", str(csv), "--namespace", "infer")
    assert code == 0, out
    parts = sorted(p.name for p in (ds / "_derived/infer").glob("part-*.parquet"))
    assert len(parts) == 4
    ledger = json.loads(ledger_path.read_text())
    assert ledger["schema_version"] == before["schema_version"]
    assert [p["name"] for p in ledger["parts"]] == parts
    for entry in ledger["parts"]:
        digest = hashlib.sha256((ds / "_derived/infer" / entry["name"]).read_bytes()).hexdigest()
        assert entry["digest"] == f"sha256:{digest}"
    code, out = run(root, capsys, "head", "densegen/parts", "-n", "2", "--columns", "infer__ll")
    assert code == 0 and "-1.5" in out and "-2.5" in out, out
    code, out = run(root, capsys, "validate", "densegen/parts")
    assert code == 0, out


def test_attach_after_a_registry_change_restamps_and_passes_the_default_validate(tmp_path, capsys):
    """root_bad: overlays stamped before `later` was registered fail `current`; our next write
    stamps only its own file, so the old ones still fail, as in the public tool."""
    root = unpack("root_bad", tmp_path)
    ids = pq.read_table(root / "flat1/records.parquet")["id"].to_pylist()
    csv = _attach_csv(tmp_path, "id,later__x", [f"{ids[0]},1.0"])
    code, out = run(root, capsys, "attach", "flat1", "--path", str(csv), "--namespace", "later")
    assert code == 0, out
    meta = pq.read_schema(root / "flat1/_derived/later.parquet").metadata
    assert meta[b"usr:registry_hash"].decode() == registry_hash_of(root)
    code, out = run(root, capsys, "validate", "flat1")
    assert code == 0, out


def registry_hash_of(root: Path) -> str:
    from usrbatch.dataset.registry import load_registry

    registry = load_registry(root)
    assert registry is not None
    return registry.hash


def test_our_sequence_keyed_attach_writes_the_public_overlay_form(tmp_path, capsys):
    """Attach by sequence into a fresh namespace of a public dataset: the file has the public
    sequence-keyed form (key column `sequence`, same column types, same metadata keys), so the
    public tool's own attach --key sequence can extend it (it checks `usr:overlay_key`)."""
    root = unpack("root", tmp_path)
    public = pq.read_schema(root / "densegen/seqkey/_derived/mock.parquet")
    seqs = pq.read_table(root / "flat1/records.parquet")["sequence"].to_pylist()
    csv = _attach_csv(tmp_path, "sequence,mock__score,mock__tag", [f" {seqs[0]} ,0.5,a", f"{seqs[1]},1.5,b"])
    code, out = run(
        root, capsys, "attach", "flat1", "--path", str(csv), "--namespace", "mock", "--key", "sequence"
    )
    assert code == 0, out
    ours = pq.read_table(root / "flat1/_derived/mock.parquet")
    assert ours.schema.remove_metadata() == public.remove_metadata()
    assert set(ours.schema.metadata) == set(public.metadata)
    assert ours.schema.metadata[b"usr:overlay_key"] == b"sequence"
    assert ours["sequence"].to_pylist() == [seqs[0].strip(), seqs[1].strip()]  # stored trimmed
    code, out = run(root, capsys, "head", "flat1", "-n", "2", "--columns", "mock__tag")
    assert code == 0 and out.split()[-1] == "b" and "a" in out.split(), out


@pytest.mark.parametrize("root_name", ["root", "root_bad"])
def test_strict_checks_the_materialized_columns_against_the_mode_registry(roots, capsys, root_name):
    """`materialize` folded mock__score/mock__tag into records.parquet; --strict checks them (and,
    outside the namespace modes, records.parquet's stamp) against the registry of the mode."""
    for mode in MODES:
        code, out = run(
            roots[root_name], capsys, "validate", "densegen/materialized", "--strict", "--registry-mode", mode
        )
        stale = root_name == "root_bad" and mode == "current"  # stamped before `later` was registered
        assert (code == 2) is stale, (mode, out)
        if stale:
            assert (
                "Materialized base columns failed strict registry validation. current: records.parquet registry_hash mismatch"
                in out
            )
