"""Shared helpers for benchmarks: make test data, time a callable, print a ratio line."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path


def make_dataset_tree(root: Path, *, parts: int, part_bytes: int, primary_bytes: int, seed: int = 7) -> Path:
    """A dataset-shaped tree of random bytes: records.parquet, meta.md, .events.log, N overlay parts."""
    import random

    rng = random.Random(seed)
    ds = root / "bench" / "ds"
    (ds / "_derived" / "infer").mkdir(parents=True, exist_ok=True)
    with open(ds / "records.parquet", "wb") as fh:  # in 1 MiB blocks: keep the benchmark's own RSS small
        left = primary_bytes
        while left > 0:
            n = min(left, 1 << 20)
            fh.write(rng.randbytes(n))
            left -= n
    (ds / "meta.md").write_text("# bench\n")
    (ds / ".events.log").write_text('{"action":"init"}\n')
    for i in range(parts):
        (ds / "_derived" / "infer" / f"part-{i:05d}.parquet").write_bytes(rng.randbytes(part_bytes))
    return ds


def timed(fn: Callable[[], object], repeat: int = 3) -> float:
    """Best wall time of `repeat` runs (seconds)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def report(name: str, ours: float, peer_name: str, peer: float, extra: str = "") -> str:
    """One line: `name: ours=Xs peer=Ys ratio=peer/ours (>1 means we are faster)`."""
    ratio = peer / ours if ours > 0 else float("inf")
    line = f"{name}: usrbatch={ours:.3f}s {peer_name}={peer:.3f}s speedup={ratio:.2f}x {extra}".rstrip()
    print(line, flush=True)
    return line


def drop_env_cache() -> None:
    """Benchmarks use a private hash cache so runs do not disturb the user's."""
    os.environ.setdefault(
        "XDG_CACHE_HOME", str(Path(os.environ.get("TMPDIR", "/tmp")) / "usrbatch-bench-cache")
    )
