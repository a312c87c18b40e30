from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from usrbatch.dataset.registry import (
    load_registry,
    namespace_contract_hash,
    parse_columns_spec,
    register_namespace,
    registry_hash,
)
from usrbatch.errors import SchemaError


def test_columns_spec_splits_only_at_depth_zero() -> None:
    cols = parse_columns_spec("x__s:struct<a:int32,b:string>, x__v:list<float64>", "x")
    assert [(c.name, c.type) for c in cols] == [
        ("x__s", "struct<a:int32,b:string>"),
        ("x__v", "list<float64>"),
    ]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("x__a", "Invalid column spec 'x__a'. Use name:type."),
        ("plain:int8", "Registry column 'plain' must be namespaced."),
        ("y__a:int8", "Registry column 'y__a' must start with 'x__'."),
        ("x__a:int8,x__a:int16", "Registry namespace 'x' has duplicate column names."),
        ("x__a:decimal", "Unsupported registry type 'decimal'."),
    ],
)
def test_column_spec_errors_match_public_texts(spec: str, message: str) -> None:
    with pytest.raises(SchemaError) as info:
        parse_columns_spec(spec, "x")
    assert str(info.value) == message


def _known_good_hash(namespaces: dict) -> str:
    """The §12 recipe, computed independently: safe_dump(sort_keys) of the sorted payload."""
    payload = {"namespaces": {k: namespaces[k] for k in sorted(namespaces)}}
    return hashlib.sha256(yaml.safe_dump(payload, sort_keys=True).encode("utf-8")).hexdigest()


USR_STATE = {
    "owner": "usr",
    "description": "Reserved record-state overlay (masked/qc/split/lineage).",
    "columns": [
        {"name": "usr_state__masked", "type": "bool"},
        {"name": "usr_state__qc_status", "type": "string"},
        {"name": "usr_state__split", "type": "string"},
        {"name": "usr_state__supersedes", "type": "string"},
        {"name": "usr_state__lineage", "type": "list<string>"},
    ],
}


def test_first_registration_adds_usr_state_and_hash_matches_recipe(tmp_path: Path) -> None:
    path = register_namespace(tmp_path, "mock", "mock__score:float64,mock__vec:list<float64>")
    assert path == tmp_path / "registry.yaml"
    expected = {
        "usr_state": USR_STATE,
        "mock": {
            "owner": None,
            "description": None,
            "columns": [
                {"name": "mock__score", "type": "float64"},
                {"name": "mock__vec", "type": "list<float64>"},
            ],
        },
    }
    assert registry_hash(tmp_path) == _known_good_hash(expected)
    # the hash is of the canonical re-serialization, not the raw bytes: reformatting keeps it
    raw = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump(raw, sort_keys=False, indent=4, default_flow_style=False))
    assert registry_hash(tmp_path) == _known_good_hash(expected)


def test_namespace_contract_hash_matches_recipe(tmp_path: Path) -> None:
    register_namespace(
        tmp_path, "mock", "mock__score:float64,mock__vec:list<float64>", owner="me", description="d"
    )
    spec = load_registry(tmp_path).namespaces["mock"]
    payload = {
        "namespace": "mock",
        "columns": [
            {"name": "mock__score", "type": "float64"},
            {"name": "mock__vec", "type": "list<float64>"},
        ],
    }
    assert (
        namespace_contract_hash(spec)
        == hashlib.sha256(yaml.safe_dump(payload, sort_keys=True).encode()).hexdigest()
    )
    # owner/description are catalog metadata, not part of the contract
    register_namespace(
        tmp_path, "mock", "mock__score:float64,mock__vec:list<float64>", owner="x", overwrite=True
    )
    assert load_registry(tmp_path).namespaces["mock"].contract_hash == namespace_contract_hash(spec)


def test_register_twice_needs_overwrite(tmp_path: Path) -> None:
    register_namespace(tmp_path, "mock", "mock__a:int8")
    before = (tmp_path / "registry.yaml").read_bytes()
    with pytest.raises(SchemaError) as info:
        register_namespace(tmp_path, "mock", "mock__a:int16")
    assert str(info.value) == "Namespace 'mock' already registered. Use --overwrite to replace."
    assert info.value.hint == f"It is registered in {tmp_path / 'registry.yaml'}."
    assert (tmp_path / "registry.yaml").read_bytes() == before
    register_namespace(tmp_path, "mock", "mock__a:int16", overwrite=True)
    assert load_registry(tmp_path).namespaces["mock"].columns[0].type == "int16"


def test_missing_registry_and_missing_usr_state(tmp_path: Path) -> None:
    with pytest.raises(
        SchemaError, match=r"Registry required but not found: .*registry.yaml\. Create it with"
    ):
        load_registry(tmp_path)
    (tmp_path / "registry.yaml").write_text(
        "namespaces:\n  mock:\n    columns:\n    - {name: mock__a, type: int8}\n"
    )
    with pytest.raises(SchemaError, match="Registry must include reserved namespace 'usr_state'"):
        load_registry(tmp_path)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "namespaces:\n  mock:\n    columns:\n      - {name: mock__x, type: decimal}\n",
            r"^Unsupported registry type 'decimal' \(in .*registry\.yaml\)\.$",
        ),
        (
            "namespaces:\n  mock:\n    columns:\n      - {name: x, type: string}\n",
            r"^Registry column 'x' must be namespaced \(in .*registry\.yaml\)\.$",
        ),
        (
            "namespaces: [\n  oops: {\n",
            r"^Registry .*registry\.yaml is not valid YAML: [^\n]*\. Fix the file\.$",
        ),
    ],
)
def test_registry_errors_name_the_file(tmp_path: Path, body: str, message: str) -> None:
    (tmp_path / "registry.yaml").write_text(body)
    with pytest.raises(SchemaError, match=message) as info:
        load_registry(tmp_path)
    assert str(tmp_path / "registry.yaml") in info.value.message
