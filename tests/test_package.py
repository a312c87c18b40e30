"""The package installs with both console scripts and the shared contracts hold."""

import subprocess
import sys

import pytest

from usrbatch.dataset.layout import Category, classify, normalize_dataset_id
from usrbatch.errors import DatasetError


def test_console_scripts_run():
    for mod in ("usrbatch.cli.usr_main", "usrbatch.cli.usrbatch_main"):
        out = subprocess.run([sys.executable, "-m", mod, "--version"], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert "0.1.0" in out.stdout


@pytest.mark.parametrize(
    ("rel", "cat"),
    [
        ("records.parquet", Category.PRIMARY),
        ("meta.md", Category.META),
        (".events.log", Category.EVENTS),
        ("_snapshots/records-20260101T000000123456.parquet", Category.SNAPSHOTS),
        ("_derived/infer/part-1.parquet", Category.DERIVED),
        ("_derived/densegen.parquet", Category.DERIVED),
        ("_registry/registry.abc.yaml", Category.AUXILIARY),
        ("_artifacts/batch/checkpoint.json", Category.AUXILIARY),
        (".usr.lock", Category.RUNTIME),
        (".usr.lease.dataset.abc", Category.RUNTIME),
        ("_derived/infer/.usrbatch-tmp-x", Category.RUNTIME),
    ],
)
def test_classify(rel, cat):
    assert classify(rel) is cat


@pytest.mark.parametrize("bad", ["", "/abs", "a/../b", "./x", "a//b", "archived/x", "a/b/c", "a\\b"])
def test_bad_dataset_ids(bad):
    with pytest.raises(DatasetError):
        normalize_dataset_id(bad)


def test_good_dataset_ids():
    assert normalize_dataset_id("demo") == "demo"
    assert normalize_dataset_id("densegen/my dataset") == "densegen/my dataset"
