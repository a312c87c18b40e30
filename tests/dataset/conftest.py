"""Fixtures shared by the dataset tests: a datasets root, a populated dataset, a tree snapshot."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from usrbatch.dataset.records import import_records, init_dataset
from usrbatch.dataset.ref import DatasetRef
from usrbatch.dataset.registry import register_namespace

SEQUENCES = ["ACGTACGT", "AAAACCCC", "GGGGTTTT", "acgtACGT"]


def tree_state(root: Path) -> dict[str, bytes | str]:
    """Every path under root (files: bytes, dirs/links: a marker), dotfiles and locks included."""
    state: dict[str, bytes | str] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs:
            state[os.path.relpath(os.path.join(dirpath, name), root)] = "<dir>"
        for name in files:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            state[rel] = "<link>" if os.path.islink(full) else Path(full).read_bytes()
    return state


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


@pytest.fixture
def tree():
    """`tree(root)` -> every path and file's bytes under root, for 'nothing changed' assertions."""
    return tree_state
