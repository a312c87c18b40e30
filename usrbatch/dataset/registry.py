"""registry.yaml: namespaces, their column specs, the registry hash and namespace-contract hashes
(the column type texts themselves: registry_types.py).

Compatibility with the public USR tool matters here: the canonical bytes (PyYAML `safe_dump`,
sort_keys, namespaces sorted, column order kept, `owner`/`description` included even when null)
and the reserved `usr_state` entry (including its owner and description) must be byte-identical,
or `usr:registry_hash` stamps would differ between tools for the same registry.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import yaml

from usrbatch.dataset.layout import REGISTRY_FILE
from usrbatch.dataset.registry_types import check_timezones, parse_type, render_type, split_top_level
from usrbatch.errors import NamespaceError, SchemaError
from usrbatch.files import atomic_write_bytes

USR_STATE = "usr_state"
RESERVED_NAMESPACES = frozenset({"usr", USR_STATE})
NAMESPACE_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    type: str  # the type text exactly as registered (hashes are computed over it)

    @property
    def arrow_type(self) -> pa.DataType:
        return parse_type(self.type)


@dataclass(frozen=True)
class NamespaceSpec:
    name: str
    columns: tuple[ColumnSpec, ...]
    owner: str | None = None
    description: str | None = None

    def column(self, name: str) -> ColumnSpec | None:
        return next((c for c in self.columns if c.name == name), None)

    @property
    def contract_hash(self) -> str:
        return namespace_contract_hash(self)


@dataclass(frozen=True)
class Registry:
    path: Path
    namespaces: dict[str, NamespaceSpec] = field(default_factory=dict)

    def canonical_bytes(self) -> bytes:
        return canonical_registry_bytes(self.namespaces)

    @functools.cached_property
    def hash(self) -> str:  # computed once: a Registry is never mutated after load
        return hashlib.sha256(self.canonical_bytes()).hexdigest()

    def require(self, namespace: str) -> NamespaceSpec:
        spec = self.namespaces.get(namespace)
        if spec is None:
            raise NamespaceError(
                f"Namespace '{namespace}' is not registered. Register it with `usr namespace register ...`.",
                hint=f"usr namespace register {namespace} --columns '{namespace}__col:float64'",
            )
        return spec


USR_STATE_SPEC = NamespaceSpec(
    name=USR_STATE,
    owner="usr",
    description="Reserved record-state overlay (masked/qc/split/lineage).",
    columns=(
        ColumnSpec("usr_state__masked", "bool"),
        ColumnSpec("usr_state__qc_status", "string"),
        ColumnSpec("usr_state__split", "string"),
        ColumnSpec("usr_state__supersedes", "string"),
        ColumnSpec("usr_state__lineage", "list<string>"),
    ),
)


# ---------------------------------------------------------------------------------------------
# Column specs


def parse_columns_spec(text: str, namespace: str) -> list[ColumnSpec]:
    """Parse `--columns 'ns__a:float64,ns__v:list<float64>'` and validate it for `namespace`.

    Unlike the public CLI (which splits on every comma, so multi-field structs cannot be
    registered), this splits only on commas at bracket depth 0: `ns__s:struct<a:int32,b:string>`
    is one column.
    """
    columns: list[ColumnSpec] = []
    for raw in split_top_level(text or ""):
        name, sep, type_text = raw.partition(":")
        if not sep or not name.strip() or not type_text.strip():
            raise SchemaError(f"Invalid column spec '{raw}'. Use name:type.")
        columns.append(ColumnSpec(name.strip(), type_text.strip()))
    validate_columns(namespace, columns)
    return [canonical_column(c) for c in columns]


def canonical_column(column: ColumnSpec) -> ColumnSpec:
    """The column with its type text in the one spelling the public tool's validate accepts
    (`timestamp[us, UTC]`, `list<float64>`, `struct<a:int32,b:string>`): it compares an overlay's
    Arrow type rendered that way with the registered text, character for character. Time zones
    are checked (check_timezones)."""
    dtype = parse_type(column.type)
    check_timezones(dtype, column.type)
    return ColumnSpec(column.name, render_type(dtype))


def validate_columns(namespace: str, columns: list[ColumnSpec] | tuple[ColumnSpec, ...]) -> None:
    """Unique names, `<ns>__` prefix, parseable types (the public tool's messages)."""
    names = [c.name for c in columns]
    if len(names) != len(set(names)):
        raise SchemaError(f"Registry namespace '{namespace}' has duplicate column names.")
    prefix = f"{namespace}__"
    for column in columns:
        if "__" not in column.name:
            raise SchemaError(f"Registry column '{column.name}' must be namespaced.")
        if not column.name.startswith(prefix):
            raise SchemaError(f"Registry column '{column.name}' must start with '{prefix}'.")
        parse_type(column.type)


# ---------------------------------------------------------------------------------------------
# Hashes


def _payload(namespaces: dict[str, NamespaceSpec]) -> dict:
    return {
        "namespaces": {
            name: {
                "owner": spec.owner,
                "description": spec.description,
                "columns": [{"name": c.name, "type": c.type} for c in spec.columns],
            }
            for name, spec in sorted(namespaces.items())
        }
    }


def canonical_registry_bytes(namespaces: dict[str, NamespaceSpec]) -> bytes:
    """The canonical re-serialization whose sha256 is `usr:registry_hash`."""
    return yaml.safe_dump(_payload(namespaces), sort_keys=True).encode("utf-8")


def namespace_contract_hash(spec: NamespaceSpec) -> str:
    """sha256 of safe_dump({namespace, columns:[{name,type}]}, sort_keys) (`usr:namespace_contract_hash`)."""
    payload = {
        "namespace": spec.name,
        "columns": [{"name": c.name, "type": c.type} for c in spec.columns],
    }
    return hashlib.sha256(yaml.safe_dump(payload, sort_keys=True).encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------------------------
# Load / save


def registry_path(root: Path | str) -> Path:
    return Path(root) / REGISTRY_FILE


def _parse_namespace(name: str, entry: object, path: Path) -> NamespaceSpec:
    if not isinstance(entry, dict):
        raise SchemaError(f"Registry entry for '{name}' must be a mapping ({path}).")
    raw_columns = entry.get("columns") or []
    if not isinstance(raw_columns, list):
        raise SchemaError(f"Registry entry for '{name}' must define 'columns' as a list ({path}).")
    columns: list[ColumnSpec] = []
    for record in raw_columns:
        if not isinstance(record, dict) or not record.get("name") or not record.get("type"):
            raise SchemaError(f"Registry column for '{name}' requires name and type ({path}).")
        columns.append(ColumnSpec(str(record["name"]), str(record["type"])))
    validate_columns(name, columns)
    return NamespaceSpec(
        name=name, columns=tuple(columns), owner=entry.get("owner"), description=entry.get("description")
    )


def _check_usr_state(namespaces: dict[str, NamespaceSpec], path: Path) -> None:
    spec = namespaces.get(USR_STATE)
    if spec is None:
        raise SchemaError(
            f"Registry must include reserved namespace 'usr_state'. Add usr_state columns to registry.yaml ({path})."
        )
    expected = {c.name: c.type for c in USR_STATE_SPEC.columns}
    actual = {c.name: c.type for c in spec.columns}
    if expected != actual:
        raise SchemaError(
            f"Registry entry for 'usr_state' must match the reserved schema ({path}): expected "
            + ", ".join(f"{k}:{v}" for k, v in expected.items())
        )


def load_registry(root: Path | str, *, required: bool = True) -> Registry | None:
    """Load `<root>/registry.yaml`. Missing: SchemaError when required, else None."""
    path = registry_path(root)
    if not path.is_file():
        if required:
            raise SchemaError(
                f"Registry required but not found: {path}. Create it with `usr namespace register ...`."
            )
        return None
    return load_registry_file(path)


def load_registry_file(path: Path) -> Registry:
    """Load one registry file (the root's, or a dataset's frozen `_registry/registry.<hash>.yaml`).

    SchemaError naming the file when it is missing, not YAML, or not a valid registry."""
    if not path.is_file():
        raise SchemaError(f"Registry file not found: {path}.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        detail = " ".join(str(exc).split())  # PyYAML's report spans lines; the CLI prints one
        raise SchemaError(f"Registry {path} is not valid YAML: {detail}. Fix the file.") from exc
    except OSError as exc:
        raise SchemaError(f"Registry {path} cannot be read: {exc.strerror or exc}.") from exc
    if not isinstance(data, dict):
        raise SchemaError(f"Registry file must contain a 'namespaces' mapping ({path}).")
    raw = data.get("namespaces") or {}
    if not isinstance(raw, dict):
        raise SchemaError(f"Registry file must contain a 'namespaces' mapping ({path}).")
    try:
        namespaces = {str(k): _parse_namespace(str(k), v, path) for k, v in raw.items()}
    except SchemaError as exc:  # column and type errors name no file on their own
        if str(path) in exc.message:
            raise
        raise type(exc)(f"{exc.message.rstrip('.')} (in {path}).", hint=exc.hint) from None
    _check_usr_state(namespaces, path)
    return Registry(path=path, namespaces=namespaces)


def registry_hash(root: Path | str) -> str | None:
    """The canonical registry hash of `<root>/registry.yaml`, or None when there is none."""
    registry = load_registry(root, required=False)
    return registry.hash if registry else None


def save_registry(root: Path | str, namespaces: dict[str, NamespaceSpec]) -> Path:
    """Write the canonical form of `namespaces` to `<root>/registry.yaml` atomically."""
    path = registry_path(root)
    atomic_write_bytes(path, canonical_registry_bytes(namespaces))
    return path


def ensure_registry(root: Path | str) -> tuple[Registry, bool]:
    """Load the registry, creating it with only `usr_state` when absent. Returns (registry, created)."""
    existing = load_registry(root, required=False)
    if existing is not None:
        return existing, False
    Path(root).mkdir(parents=True, exist_ok=True)
    path = save_registry(root, {USR_STATE: USR_STATE_SPEC})
    return Registry(path=path, namespaces={USR_STATE: USR_STATE_SPEC}), True


def register_namespace(
    root: Path | str,
    namespace: str,
    columns: list[ColumnSpec] | str,
    *,
    owner: str | None = None,
    description: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Add (or with overwrite replace) a namespace; the first registration adds `usr_state`."""
    cols = (
        parse_columns_spec(columns, namespace)
        if isinstance(columns, str)
        else [canonical_column(c) for c in columns]
    )
    existing = load_registry(root, required=False)
    namespaces = dict(existing.namespaces) if existing else {}
    namespaces.setdefault(USR_STATE, USR_STATE_SPEC)
    if namespace in namespaces and not overwrite:
        raise SchemaError(
            f"Namespace '{namespace}' already registered. Use --overwrite to replace.",
            hint=f"It is registered in {registry_path(root)}.",
        )
    if not cols:
        raise SchemaError(
            "Registry entry must include at least one column. Pass --columns 'ns__name:type,...'."
        )
    validate_columns(namespace, cols)
    if namespace == USR_STATE and {c.name: c.type for c in cols} != {
        c.name: c.type for c in USR_STATE_SPEC.columns
    }:
        raise SchemaError("Reserved namespace 'usr_state' must match the standard schema.")
    namespaces[namespace] = NamespaceSpec(
        name=namespace, columns=tuple(cols), owner=owner, description=description
    )
    Path(root).mkdir(parents=True, exist_ok=True)
    return save_registry(root, namespaces)


def check_namespace_name(namespace: str) -> None:
    """The attach/overlay namespace rules: `^[a-z][a-z0-9_]*$` and not reserved."""
    if not NAMESPACE_PATTERN.match(namespace or ""):
        raise NamespaceError(
            "Invalid namespace. Use lowercase letters, digits, and underscores, starting with a letter."
        )
    if namespace in RESERVED_NAMESPACES:
        raise NamespaceError(f"Namespace '{namespace}' is reserved.")
