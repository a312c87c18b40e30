"""Data-plane scaling: import, attach and overlay reads at two sizes, timed in one run.

    uv run python bench/bench_scaling.py [--rows 100000] [--parts 200]

The wall-time checks that used to live in tests (import of 100k rows < 20 s, attach + part + read
of 100k rows < 30 s, read_dataset over 200 overlay parts < 5 s) moved here: a test proves
behaviour, a benchmark measures speed. Each line times the same operation at size N/2 and N and
prints the ratio; about 2 means linear, about 4 quadratic.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import pyarrow as pa

from usrbatch.dataset.overlays import attach, read_dataset, write_overlay_part
from usrbatch.dataset.records import import_records, init_dataset
from usrbatch.dataset.registry import register_namespace


def _seqs(n: int, length: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return list({"".join(rng.choice("ACGT") for _ in range(length)) for _ in range(n)})


def _import(root: Path, name: str, seqs: list[str]) -> float:
    ref = init_dataset(root, name).dataset
    start = time.perf_counter()
    import_records(ref, pa.table({"sequence": seqs}))
    return time.perf_counter() - start


def _attach_part_read(root: Path, name: str, seqs: list[str]) -> float:
    ref = init_dataset(root, name).dataset
    import_records(ref, pa.table({"sequence": seqs}))
    ids = read_dataset(ref, ["id"])["id"].to_pylist()
    src = root / f"{name.replace('/', '_')}.csv"
    src.write_text("sequence,ll\n" + "\n".join(f"{s},{i / 7}" for i, s in enumerate(seqs)) + "\n")
    start = time.perf_counter()
    attach(ref, src, "infer", key="sequence")
    write_overlay_part(ref, "infer", pa.table({"id": ids, "infer__v": [[1.0, 2.0]] * len(ids)}))
    read_dataset(ref)
    return time.perf_counter() - start


def _read_parts(root: Path, name: str, parts: int) -> float:
    ref = init_dataset(root, name).dataset
    import_records(ref, pa.table({"sequence": _seqs(4, 20, 5)}))
    ids = read_dataset(ref, ["id"])["id"].to_pylist()
    for i in range(parts):
        write_overlay_part(ref, "infer", pa.table({"id": [ids[i % len(ids)]], "infer__n": [i]}))
    start = time.perf_counter()
    read_dataset(ref, ["infer__n"])
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--parts", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="usrbatch-bench-scaling-") as tmp:
        root = Path(tmp)
        register_namespace(root, "infer", "infer__ll:float64,infer__v:list<float64>,infer__n:int64")
        half, full = args.rows // 2, args.rows
        _import(root, "w/warm", _seqs(100, 40, 1))  # first-call imports and caches out of the timings
        rows = [
            (
                "import",
                _import(root, "i/half", _seqs(half, 40, 7)),
                _import(root, "i/full", _seqs(full, 40, 7)),
            ),
            (
                "attach+part+read",
                _attach_part_read(root, "a/half", _seqs(half, 30, 3)),
                _attach_part_read(root, "a/full", _seqs(full, 30, 3)),
            ),
            (
                "read_dataset over parts",
                _read_parts(root, "p/half", args.parts // 2),
                _read_parts(root, "p/full", args.parts),
            ),
        ]
        for name, small, big in rows:
            print(f"{name:<24} N/2 {small:7.2f}s  N {big:7.2f}s  ratio {big / small:5.2f} (2 = linear)")


if __name__ == "__main__":
    main()
