"""Make sure a step's overlay namespace is registered with exactly the columns it writes."""

from __future__ import annotations

from pathlib import Path

from usrbatch.dataset.registry import ColumnSpec, load_registry, register_namespace
from usrbatch.errors import SchemaError


def ensure_namespace(
    root: Path, namespace: str, columns: dict[str, str], *, owner: str, description: str
) -> bool:
    """Register `namespace` with `columns` (name -> type) unless present; True if it was added.

    A namespace already registered with other columns or types is a SchemaError (never rewritten).
    """
    registry = load_registry(root, required=False)
    spec = registry.namespaces.get(namespace) if registry else None
    wanted = {name: kind for name, kind in columns.items()}
    if spec is not None:
        have = {c.name: c.type for c in spec.columns}
        missing = {k: v for k, v in wanted.items() if have.get(k) != v}
        if missing:
            raise SchemaError(
                f"Namespace '{namespace}' is registered in {registry.path} without the columns this step "
                f"writes: {', '.join(f'{k}:{v}' for k, v in missing.items())}.",
                hint="Register them (usr namespace register ... --overwrite) or use a fresh datasets root.",
            )
        return False
    register_namespace(
        root,
        namespace,
        [ColumnSpec(name, kind) for name, kind in wanted.items()],
        owner=owner,
        description=description,
    )
    return True
