"""The `usr` CLI through its real entry point (run_cli): a `cli` runner over a private root and a
`populated` dataset (`tree`, to prove a refused command changed nothing, is in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from usrbatch.cli.common import run_cli
from usrbatch.cli.usr_main import usr


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    root = tmp_path / "root"
    root.mkdir()

    def run(*argv: str) -> tuple[int, str]:
        capsys.readouterr()
        code = run_cli(usr, ["--root", str(root), *argv])
        captured = capsys.readouterr()
        return code, captured.out + captured.err

    run.root = root  # type: ignore[attr-defined]
    return run


@pytest.fixture
def populated(cli, tmp_path: Path):
    """ns/demo with 3 records and an `infer` namespace; returns (cli, root, tmp_path)."""
    code, out = cli("init", "ns/demo", "--source", "tests")
    assert code == 0, out
    code, out = cli(
        "namespace",
        "register",
        "infer",
        "--columns",
        "infer__ll:float64,infer__v:list<float64>,infer__s:struct<a:int32,b:string>",
    )
    assert code == 0, out
    seqs = tmp_path / "seqs.csv"
    seqs.write_text("sequence\nACGTACGT\nAAAACCCC\nggggtttt\n")
    code, out = cli("import", "ns/demo", "--from", "csv", "--path", str(seqs))
    assert code == 0, out
    return cli, cli.root, tmp_path
