"""The layer rules of docs/architecture.md, checked on the source: who may import whom; and its map
names every module."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "usrbatch"
LEAVES = {"__init__", "__version__", "files", "errors", "redaction", "terminal", "remotes_trust"}
ALLOWED: dict[str, set[str]] = {
    "files": set(),
    "errors": set(),
    "redaction": set(),
    "terminal": set(),
    "remotes_trust": {"errors"},
    "auditlog": {"redaction"},
    "dataset": LEAVES,
    "remotes": LEAVES,
    "agent": LEAVES,
    "transport": LEAVES | {"agent", "dataset", "remotes", "auditlog"},
    "sync": LEAVES | {"agent", "transport", "dataset", "remotes", "auditlog"},
    "steps": LEAVES | {"dataset", "auditlog"},
    # jobs reads remotes.yaml (a leaf-only module) so `submit sync` refuses an unknown remote
    # before anything is queued; it never opens a transport or runs the sync engine itself.
    "jobs": LEAVES | {"steps", "dataset", "remotes", "auditlog"},
    "monitor": LEAVES | {"jobs", "dataset", "auditlog"},
}


def _imports(path: Path) -> set[str]:
    """The top-level usrbatch modules/packages `path` imports (anywhere in the file)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"usrbatch.{a.name}" for a in node.names] if node.module == "usrbatch" else [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        found.update(n.split(".")[1] for n in names if n.startswith("usrbatch."))
    return found


def _unit(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def test_every_module_imports_only_what_its_layer_may() -> None:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        unit = _unit(path)
        if unit not in ALLOWED:
            continue  # cli/, remotes_doctor and the package root may import anything below them
        for target in sorted(_imports(path) - {unit} - ALLOWED[unit]):
            wrong.append(f"{path.relative_to(PACKAGE.parent)} imports usrbatch.{target}")
    assert wrong == []


def test_the_agent_is_self_contained() -> None:
    """agent/remote.py and agent/loader.py are sent to remote hosts: they import nothing from usrbatch."""
    assert _imports(PACKAGE / "agent" / "remote.py") == set()
    assert _imports(PACKAGE / "agent" / "loader.py") == set()


def test_the_rules_see_real_imports() -> None:
    """The checker is not vacuous: it finds the imports the pull really has."""
    assert {"transport", "dataset", "files"} <= _imports(PACKAGE / "sync" / "pull.py")


def test_the_architecture_map_names_every_module() -> None:
    """docs/architecture.md "matches the tree": each module (as `pkg/name.py`, or `name.py` at the
    top) appears in it, so a new module cannot land without a row saying what it holds."""
    doc = (PACKAGE.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    modules = [p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"]
    assert len(modules) > 50  # the walk found the package
    unnamed = [m for m in modules if f"`{m}`" not in doc and f"{m.removesuffix('.py')}" not in doc]
    assert not unnamed, f"add a row to docs/architecture.md for: {sorted(unnamed)}"
