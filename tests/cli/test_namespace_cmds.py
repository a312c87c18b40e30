"""`usr namespace register|list|show` through the real entry point."""

from __future__ import annotations


def test_namespace_commands(populated) -> None:
    cli, root, _ = populated
    code, out = cli("namespace", "list")
    assert code == 0
    assert "infer: infer__ll, infer__v, infer__s" in out.splitlines()
    assert out.splitlines()[-1].startswith("usr_state: usr_state__masked")
    code, out = cli("namespace", "show", "infer")
    assert out.splitlines() == [
        "name: infer",
        "owner: ",
        "description: ",
        "columns:",
        "  - infer__ll: float64",
        "  - infer__v: list<float64>",
        "  - infer__s: struct<a:int32,b:string>",
    ]
    code, out = cli("namespace", "register", "infer", "--columns", "infer__x:int8")
    assert code == 2
    assert out.splitlines() == [
        "ERROR: Namespace 'infer' already registered. Use --overwrite to replace.",
        f"Hint: It is registered in {cli.root / 'registry.yaml'}.",
    ]


def test_an_unsupported_column_type_is_an_error_and_changes_nothing(populated, tree) -> None:
    cli, root, _ = populated
    before = tree(root)
    code, out = cli("namespace", "register", "x", "--columns", "x__a:float128")
    assert code == 2
    assert out.startswith("ERROR: Unsupported registry type 'float128'.") and "Traceback" not in out
    assert tree(root) == before
