"""Step namespaces are registered before a loop's first write, in one registry write."""

from __future__ import annotations

from pathlib import Path

import pytest

from usrbatch.dataset.registry import load_registry, register_namespace
from usrbatch.errors import SchemaError
from usrbatch.steps.namespaces import ensure_loop_namespaces, ensure_step_namespace, step_namespaces


def test_loop_namespaces_are_registered_once_and_steps_then_change_nothing(tmp_path: Path) -> None:
    assert ensure_loop_namespaces(tmp_path, ["densegen", "sync", "infer", "densegen"]) == [
        "densegen",
        "infer",
    ]
    registry = load_registry(tmp_path)
    assert registry is not None and set(registry.namespaces) == {"densegen", "infer", "usr_state"}
    for kind, step in step_namespaces().items():
        assert {c.name: c.type for c in registry.namespaces[step.namespace].columns} == step.columns
        assert ensure_step_namespace(tmp_path, kind) is False
    after = load_registry(tmp_path)
    assert after is not None and after.hash == registry.hash


def test_a_namespace_registered_with_other_columns_is_refused_not_rewritten(tmp_path: Path) -> None:
    register_namespace(tmp_path, "infer", "infer__other:string")
    before = (tmp_path / "registry.yaml").read_bytes()
    with pytest.raises(SchemaError, match="without the columns this step writes"):
        ensure_loop_namespaces(tmp_path, ["densegen", "infer"])
    assert (tmp_path / "registry.yaml").read_bytes() == before  # densegen not added either
