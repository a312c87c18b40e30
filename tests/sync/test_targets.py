"""Target classification and dataset-id resolution (usrbatch/sync/targets.py) on real roots."""

from __future__ import annotations

from pathlib import Path

import pytest
from builders import make_dataset, write_records

from usrbatch.errors import DatasetError
from usrbatch.sync import targets


def test_file_target_rules(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path, "ns/demo")
    (tmp_path / "notes.txt").write_text("x")
    assert targets.is_file_target("anything/absent.parquet")  # by suffix, existing or not
    assert targets.is_file_target(str(ds / "records.parquet"))
    assert targets.is_file_target(str(tmp_path / "notes.txt"))  # an existing file
    assert not targets.is_file_target("ns/demo")  # an id
    assert not targets.is_file_target(str(ds))  # a dataset dir
    assert targets.is_dataset_dir_target(str(ds))
    assert not targets.is_dataset_dir_target(str(tmp_path / "ns"))


@pytest.mark.parametrize(
    ("value", "strict"),
    [("1", True), ("true", True), ("YES", True), (" on ", True), ("0", False), ("off", False), ("", False)],
)
def test_strict_bootstrap_env_values(value: str, strict: bool) -> None:
    assert targets.strict_bootstrap_enabled(False, {targets.STRICT_ENV: value}) is strict
    assert targets.strict_bootstrap_enabled(True, {targets.STRICT_ENV: value}) is True


def test_flat_id_resolves_to_the_unique_local_dataset(tmp_path: Path) -> None:
    make_dataset(tmp_path, "densegen/demo")
    make_dataset(tmp_path, "flat")
    for action in ("diff", "pull", "push"):
        assert targets.resolve_dataset_id(tmp_path, "demo", action=action) == "densegen/demo"
        assert targets.resolve_dataset_id(tmp_path, "flat", action=action) == "flat"


def test_ids_with_a_slash_are_only_normalized(tmp_path: Path) -> None:
    make_dataset(tmp_path, "densegen/demo")
    assert targets.resolve_dataset_id(tmp_path, "other/demo/", action="pull") == "other/demo"
    with pytest.raises(DatasetError, match="has an empty, '.' or '..' component"):
        targets.resolve_dataset_id(tmp_path, "a/../b", action="diff")


def test_ambiguous_flat_id_lists_the_candidates(tmp_path: Path) -> None:
    make_dataset(tmp_path, "densegen/demo")
    make_dataset(tmp_path, "infer/demo")
    write_records(tmp_path / "demo" / "records.parquet", 1)
    with pytest.raises(DatasetError) as info:
        targets.resolve_dataset_id(tmp_path, "demo", action="pull")
    assert info.value.message == (
        f"Ambiguous dataset name 'demo' under {tmp_path}. Use a namespace-qualified id. "
        "Matches: demo, densegen/demo, infer/demo"
    )


def test_bootstrap_accepts_unknown_ids_for_diff_and_pull_only(tmp_path: Path) -> None:
    root = tmp_path / "not yet created"
    for raw in ("fresh", "ns/fresh"):
        assert targets.resolve_dataset_id(root, raw, action="diff") == raw
        assert targets.resolve_dataset_id(root, raw, action="pull") == raw
        with pytest.raises(
            DatasetError, match=rf"^Dataset not found: {raw} \(no records.parquet under "
        ) as info:
            targets.resolve_dataset_id(root, raw, action="push")
        assert "--root" in (info.value.hint or "") and "usr pull" in (info.value.hint or "")


def test_strict_only_normalizes(tmp_path: Path) -> None:
    make_dataset(tmp_path, "densegen/demo")
    assert targets.resolve_dataset_id(tmp_path, "demo", action="pull", strict=True) == "demo"  # no guessing
    assert (
        targets.resolve_dataset_id(tmp_path, "densegen/demo", action="pull", strict=True) == "densegen/demo"
    )
    for raw in ("../x", "/abs/x", "a/b/c", "./x"):
        with pytest.raises(DatasetError, match="explicit canonical dataset id"):
            targets.resolve_dataset_id(tmp_path, raw, action="pull", strict=True)


def test_dataset_dir_resolves_against_root_then_registry_ancestor(tmp_path: Path) -> None:
    root = tmp_path / "root"
    ds = make_dataset(root, "ns/demo")
    assert targets.resolve_dataset_target(root, str(ds), action="push") == (root, "ns/demo")
    other = tmp_path / "other"
    ds2 = make_dataset(other, "x")
    (other / "registry.yaml").write_text("namespaces: {}\n")
    assert targets.resolve_dataset_target(root, str(ds2), action="diff") == (other.resolve(), "x")
    lonely = make_dataset(tmp_path / "lonely", "y")
    with pytest.raises(DatasetError, match="outside --root and no registry.yaml ancestor"):
        targets.resolve_dataset_target(root, str(lonely), action="diff")


def test_a_stray_file_named_like_a_local_dataset_is_ambiguous(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "root"
    make_dataset(root, "densegen/demo")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert targets.is_file_mode(root, "demo") is False  # nothing in the way: a dataset id
    (work / "demo").write_text("my notes")
    with pytest.raises(DatasetError) as info:
        targets.is_file_mode(root, "demo")
    assert info.value.message == (
        "Target 'demo' is ambiguous: ./demo is a file in the working directory, and 'demo' is also "
        f"the dataset densegen/demo under {root}."
    )
    assert "'./demo' to sync the path in the working directory (FILE mode)" in (info.value.hint or "")
    assert str(root / "densegen" / "demo") in (info.value.hint or "")
    assert targets.is_file_mode(root, "./demo") is True  # the explicit choices
    assert targets.is_file_mode(root, str(root / "densegen" / "demo")) is False
    assert targets.is_file_mode(root, "other") is False
    (work / "other").write_text("x")
    assert targets.is_file_mode(root, "other") is True  # an existing file that is no local dataset


def test_a_dataset_dir_in_the_working_directory_that_is_another_dataset_is_ambiguous(
    tmp_path: Path, monkeypatch
) -> None:
    root = tmp_path / "root"
    make_dataset(root, "demo")
    monkeypatch.chdir(tmp_path)
    make_dataset(tmp_path / "elsewhere", "x")
    (tmp_path / "demo").symlink_to(tmp_path / "elsewhere" / "x")
    with pytest.raises(DatasetError, match=r"\./demo is a dataset directory in the working directory"):
        targets.is_file_mode(root, "demo")
    monkeypatch.chdir(root)  # the same dataset either way: no ambiguity
    assert targets.is_file_mode(root, "demo") is False
