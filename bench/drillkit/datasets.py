"""The drills' datasets, made by the real `usr` CLI: a `base` version and an `ahead` version that
extends it (more rows, one more overlay attach, more events), copied into each run's sides.

    base   = init + import BASE_ROWS + attach infer scores
    ahead  = base + import AHEAD_ROWS more + attach infer scores for them
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

from .world import DS, NAMESPACE, World

BASE_ROWS = 1500
AHEAD_ROWS = 400
SEQ_LEN = 300  # random DNA: records.parquet ~ a few hundred KB, so cuts land inside files


def random_sequences(rng: random.Random, n: int, length: int = SEQ_LEN) -> list[str]:
    return ["".join(rng.choice("ACGT") for _ in range(length)) for _ in range(n)]


def write_import_csv(path: Path, seqs: list[str]) -> Path:
    path.write_text("sequence\n" + "".join(s + "\n" for s in seqs))
    return path


def write_attach_csv(path: Path, seqs: list[str], rng: random.Random, column: str = "score") -> Path:
    path.write_text(f"sequence,{column}\n" + "".join(f"{s},{rng.random():.6f}\n" for s in seqs))
    return path


def _must(run, what: str) -> None:
    if not run.ok:
        raise RuntimeError(f"drill set-up failed at {what}: {run.brief()}\n{run.out}")


def build_templates(w: World, small: bool = False) -> None:
    """template/registry.yaml, template/base/<DS>, template/ahead/<DS> (deterministic content);
    `small`: a tenth of the rows (the reduced drills of the test suite)."""
    rng = random.Random(20261126)
    tpl = w.tmp / "template"
    root = tpl / "build"
    root.mkdir(parents=True)
    _must(
        w.usr(
            root,
            "namespace",
            "register",
            NAMESPACE,
            "--columns",
            f"{NAMESPACE}__score:float64,{NAMESPACE}__rank:float64",
        ),
        "register",
    )
    shutil.copy2(root / "registry.yaml", tpl / "registry.yaml")
    _must(w.usr(root, "init", DS, "--source", "drills"), "init")
    scale = 10 if small else 1
    first = random_sequences(rng, BASE_ROWS // scale)
    _must(
        w.usr(root, "import", DS, "--from", "csv", "--path", str(write_import_csv(tpl / "i1.csv", first))),
        "import",
    )
    attach1 = write_attach_csv(tpl / "a1.csv", first, rng)
    _must(
        w.usr(root, "attach", DS, "--path", str(attach1), "--namespace", NAMESPACE, "--key", "sequence"),
        "attach",
    )
    shutil.copytree(root / DS, tpl / "base" / DS, symlinks=True)
    more = random_sequences(rng, AHEAD_ROWS // scale)
    _must(
        w.usr(root, "import", DS, "--from", "csv", "--path", str(write_import_csv(tpl / "i2.csv", more))),
        "import 2",
    )
    attach2 = write_attach_csv(tpl / "a2.csv", more, rng, "rank")
    _must(
        w.usr(root, "attach", DS, "--path", str(attach2), "--namespace", NAMESPACE, "--key", "sequence"),
        "attach 2",
    )
    shutil.copytree(root / DS, tpl / "ahead" / DS, symlinks=True)


def place(w: World, version: str, root: Path) -> Path:
    """Copy template `version` ("base" or "ahead") of the drill dataset under `root`; its dir."""
    dest = root / DS
    shutil.copytree(w.tmp / "template" / version / DS, dest, symlinks=True)
    return dest


def local_change(w: World, root: Path, rng: random.Random, tag: str, rows: int = 20) -> Path:
    """Import `rows` new random sequences into the dataset under `root` (a real local mutation);
    returns the input file (reused by callers that retry)."""
    path = write_import_csv(w.tmp / f"change-{tag}.csv", random_sequences(rng, rows, 60))
    return path
