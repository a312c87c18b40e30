"""The overlay namespaces the built-in steps write, and their registration.

Registering a namespace changes the registry hash, and the public tool's default
`validate --registry-mode current` refuses every overlay stamped with an older hash. So a loop
registers every namespace its steps will write BEFORE its first write (`ensure_loop_namespaces`,
called by `submit_loop` and the demo's set-up); each step still checks its own namespace
(`ensure_step_namespace`), which is then a no-op.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from usrbatch.dataset.registry import (
    USR_STATE,
    USR_STATE_SPEC,
    ColumnSpec,
    NamespaceSpec,
    load_registry,
    save_registry,
    validate_columns,
)
from usrbatch.errors import SchemaError


@dataclass(frozen=True)
class StepNamespace:
    """What one built-in step writes: its namespace, columns (name -> type), owner, description."""

    namespace: str
    columns: dict[str, str]
    owner: str
    description: str


def step_namespaces() -> dict[str, StepNamespace]:
    """{step kind: StepNamespace} of the built-in steps that write overlays."""
    from usrbatch.steps import densegen, infer

    return {
        "densegen": StepNamespace(
            densegen.NAMESPACE, densegen.COLUMNS, "densegen", "usrbatch built-in DenseGen (dense-arrays)"
        ),
        "infer": StepNamespace(
            infer.NAMESPACE, infer.COLUMNS, "infer", "usrbatch built-in k-mer Markov scores"
        ),
    }


def _check_registered(spec: NamespaceSpec, wanted: StepNamespace, path: Path) -> None:
    have = {c.name: c.type for c in spec.columns}
    missing = {k: v for k, v in wanted.columns.items() if have.get(k) != v}
    if missing:
        raise SchemaError(
            f"Namespace '{wanted.namespace}' is registered in {path} without the columns this step "
            f"writes: {', '.join(f'{k}:{v}' for k, v in missing.items())}.",
            hint="Register them (usr namespace register ... --overwrite) or use a fresh datasets root.",
        )


def ensure_namespaces(root: Path, wanted: Iterable[StepNamespace]) -> list[str]:
    """Register every namespace of `wanted` that is missing, in ONE registry write; returns the
    names added. One registered with other columns or types is a SchemaError (never rewritten)."""
    registry = load_registry(root, required=False)
    namespaces = dict(registry.namespaces) if registry else {}
    path = registry.path if registry else Path(root) / "registry.yaml"
    added: list[str] = []
    for step in wanted:
        spec = namespaces.get(step.namespace)
        if spec is not None:
            _check_registered(spec, step, path)
            continue
        columns = tuple(ColumnSpec(n, t) for n, t in step.columns.items())
        validate_columns(step.namespace, columns)
        namespaces[step.namespace] = NamespaceSpec(
            name=step.namespace,
            columns=columns,
            owner=step.owner,
            description=step.description,
        )
        added.append(step.namespace)
    if added:
        namespaces.setdefault(USR_STATE, USR_STATE_SPEC)
        Path(root).mkdir(parents=True, exist_ok=True)
        save_registry(root, namespaces)
    return added


def ensure_step_namespace(root: Path, kind: str) -> bool:
    """Register the namespace of step `kind` unless present; True if it was added."""
    return bool(ensure_namespaces(root, [step_namespaces()[kind]]))


def ensure_loop_namespaces(root: Path, kinds: Iterable[str]) -> list[str]:
    """Register the namespaces of every step kind in `kinds` that writes overlays (one registry
    write, before the loop's first write); returns the names added."""
    table = step_namespaces()
    return ensure_namespaces(root, [table[k] for k in dict.fromkeys(kinds) if k in table])
