"""Fixtures shared by the dataset tests: a datasets root and a populated dataset (the `tree`
snapshot is in tests/conftest.py, shared with the CLI tests)."""

from __future__ import annotations

from pathlib import Path

import pytest

from usrbatch.dataset.records import import_records, init_dataset
from usrbatch.dataset.ref import DatasetRef
from usrbatch.dataset.registry import register_namespace

SEQUENCES = ["ACGTACGT", "AAAACCCC", "GGGGTTTT", "acgtACGT"]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "datasets"
    path.mkdir()
    return path


@pytest.fixture
def dataset(root: Path) -> DatasetRef:
    """ns/demo with 4 dna_4 records and an `infer` namespace registered."""
    ref = init_dataset(root, "ns/demo", source="fixture").dataset
    register_namespace(
        root,
        "infer",
        "infer__ll:float64,infer__v:list<float64>,infer__label:string,infer__n:int64",
        owner="tests",
    )
    import_records(ref, [{"sequence": s} for s in SEQUENCES], source="fixture")
    return ref
