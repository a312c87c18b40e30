"""Built-in Infer: the order-3 k-mer Markov model, scoring write-back, resume and overwrite rules."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from usrbatch.dataset.overlays import read_dataset, write_overlay_part
from usrbatch.dataset.records import import_records, init_dataset
from usrbatch.errors import SchemaError
from usrbatch.steps import infer

SEQS = ["ACGTACGTAC", "AAAAAAAAAA", "GGGCCCAAAT"]
COLS = [infer.PREFIX + o for o in infer.OUTPUTS]


def test_model_matches_the_documented_formula() -> None:
    model = infer.KmerMarkov().fit(["AAAAC"])
    # contexts: AAA->A (i=3), AAA->C (i=4): c(AAA)=2, P(A|AAA)=(1+1)/(2+4), P(C|AAA)=(1+1)/(2+4)
    ll_mean, ll_sum = model.score("AAAAC")
    assert ll_sum == pytest.approx(2 * math.log(2 / 6))
    assert ll_mean == pytest.approx(math.log(2 / 6))
    # an unseen context falls back to the uniform 1/4
    assert model.log_prob("CCC", "G") == pytest.approx(math.log(1 / 4))
    assert model.score("ACG") == (None, 0.0)


def _dataset(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    init_dataset(root, "demo")
    import_records(root / "demo", [{"sequence": s} for s in SEQS])
    return root


def test_scores_are_written_back_and_resume_skips(tmp_path: Path) -> None:
    root = _dataset(tmp_path)
    first = infer.run(root, "demo")
    assert first["scored"] == 3 and first["parts"] == 1
    table = read_dataset(root / "demo", ["sequence", *COLS]).to_pylist()
    model = infer.KmerMarkov().fit(SEQS)
    for row in table:
        mean, total = model.score(row["sequence"])
        assert row[infer.PREFIX + "ll_sum"] == pytest.approx(total)
        assert row[infer.PREFIX + "ll_mean"] == pytest.approx(mean)
        assert row[infer.PREFIX + "gc_fraction"] == pytest.approx(infer.gc_fraction(row["sequence"]))
    import_records(root / "demo", [{"sequence": "TTTTGGGGAA"}])
    second = infer.run(root, "demo")
    assert second["scored"] == 1 and second["skipped"] == 3


def test_partial_values_are_not_overwritten_without_flag(tmp_path: Path) -> None:
    root = _dataset(tmp_path)
    infer.run(root, "demo")
    ids = read_dataset(root / "demo", ["id"])["id"].to_pylist()
    write_overlay_part(root / "demo", "infer", [{"id": ids[0], infer.PREFIX + "ll_sum": None}])
    with pytest.raises(SchemaError, match="would replace non-null values"):
        infer.run(root, "demo")
    assert infer.run(root, "demo", overwrite=True)["scored"] == 3
