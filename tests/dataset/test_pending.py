"""The pending-promotion guard of the data plane: which journals count, and the refusal text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from usrbatch.dataset.layout import is_reserved
from usrbatch.dataset.pending import (
    journal_for,
    pending_problems,
    pending_promotions,
    refuse_if_pending,
)
from usrbatch.errors import DatasetError


def _journal(root: Path, dataset_id: str, dataset_dir: Path, suffix: str = "ab_12") -> Path:
    staging = root / f".usr-pull-{dataset_id.replace('/', '__')}-{suffix}"
    staging.mkdir(parents=True)
    journal = journal_for(staging)
    journal.write_text(json.dumps({"dataset_dir": str(dataset_dir), "remote": "local:/lab"}))
    return journal


def test_journal_sits_beside_its_staging_dir(tmp_path):
    staging = tmp_path / ".usr-pull-ns__demo-x1"
    assert journal_for(staging) == tmp_path / ".usr-pull-ns__demo-x1.promotion.json"


def test_pending_is_found_for_namespaced_and_flat_ids_only_for_their_dir(tmp_path):
    ns_demo, flat, demo_x = tmp_path / "ns" / "demo", tmp_path / "flat", tmp_path / "ns" / "demo-x"
    for d in (ns_demo, flat, demo_x):
        d.mkdir(parents=True)
    assert pending_promotions(ns_demo) == []
    journal = _journal(tmp_path, "ns/demo", ns_demo)
    [found] = pending_promotions(ns_demo)
    assert (found.journal, found.staging, found.dataset_id, found.remote) == (
        journal,
        journal.with_name(".usr-pull-ns__demo-ab_12"),
        "ns/demo",
        "local:/lab",
    )
    assert pending_promotions(demo_x) == []  # `demo` never matches `demo-x`
    assert pending_promotions(flat) == []
    _journal(tmp_path, "flat", flat)
    assert [p.dataset_id for p in pending_promotions(flat)] == ["flat"]
    # a journal that names another dataset dir (a copy of the root elsewhere) is not ours
    other = tmp_path / "elsewhere"
    _journal(tmp_path, "ns/demo", other, suffix="zz9")
    assert len(pending_promotions(ns_demo)) == 1


def test_an_unreadable_journal_counts_as_pending(tmp_path):
    d = tmp_path / "demo"
    d.mkdir()
    journal = _journal(tmp_path, "demo", d)
    journal.write_text("{torn")
    assert [p.journal for p in pending_promotions(d)] == [journal]


def test_refusal_names_the_action_the_journal_and_both_ways_out(tmp_path):
    d = tmp_path / "ns" / "demo"
    d.mkdir(parents=True)
    refuse_if_pending(d, "import")  # nothing pending: no error
    journal = _journal(tmp_path, "ns/demo", d)
    with pytest.raises(DatasetError) as caught:
        refuse_if_pending(d, "import")
    err = caught.value
    assert err.message.startswith("Dataset 'ns/demo' has an interrupted pull promotion pending")
    assert str(journal) in err.message and "Refusing `import`" in err.message
    assert "usr pull ns/demo REMOTE" in err.hint and "local:/lab" in err.hint
    assert f"rm -r {journal.with_name('.usr-pull-ns__demo-ab_12')} {journal}" in err.hint
    [problem] = pending_problems(d)
    assert "interrupted pull promotion pending" in problem and "usr pull ns/demo REMOTE" in problem


@pytest.mark.parametrize(
    ("rel", "reserved"),
    [
        (".usr-promotion.json", True),
        ("_derived/x/.usr-promotion.json", True),
        (".usr-pull-demo-abc/records.parquet", True),
        (".usr.lock", True),
        (".usrbatch-tmp-records.parquet", True),
        ("records.parquet", False),
        ("_artifacts/usr-pull-notes.txt", False),
        ("_artifacts/.usr-other", False),
    ],
)
def test_reserved_names(rel, reserved):
    assert is_reserved(rel) is reserved
