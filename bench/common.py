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


# -- helpers for the ssh benchmarks (bench_transfer.py, bench_noop.py) ------------------------

RUNTIME_NAMES = (".usr.lock", ".events.lock", ".usr.transfer.lock")


def load_services():
    """tests/integration/services.py as a plain module (start_sshd/stop_sshd; no pytest fixtures)."""
    import sys

    here = Path(__file__).resolve().parents[1] / "tests" / "integration"
    if str(here) not in sys.path:
        sys.path.insert(0, str(here))
    import services  # type: ignore[import-not-found]

    return services


def tree_digest(root: Path) -> dict[str, tuple[int, str]]:
    """relpath -> (size, sha256) of every regular file under root, runtime lock/lease files and
    usrbatch temp files left out: what "byte-identical" means for a dataset tree."""
    import hashlib

    out: dict[str, tuple[int, str]] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        top = rel.split("/", 1)[0]
        if top in RUNTIME_NAMES or top.startswith(".usr.lease.") or not path.is_file():
            continue
        h = hashlib.sha256()
        with path.open("rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
        out[rel] = (path.stat().st_size, h.hexdigest())
    return out


def check_identical(name: str, want: dict[str, tuple[int, str]], dest: Path) -> None:
    """Raise SystemExit with the first differences when dest's tree is not byte-identical."""
    got = tree_digest(dest)
    if got != want:
        missing = sorted(set(want) - set(got))[:5]
        extra = sorted(set(got) - set(want))[:5]
        differ = sorted(k for k in set(want) & set(got) if want[k] != got[k])[:5]
        raise SystemExit(f"{name}: destination differs: missing={missing} extra={extra} differ={differ}")
    print(f"  verified {name}: {len(got)} files byte-identical", flush=True)


def run_timed(argv: list[str]) -> float:
    """Run a command (output captured; its stderr shown on failure); wall seconds."""
    import subprocess

    t0 = time.perf_counter()
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({proc.returncode}): {' '.join(argv)}\n{proc.stderr[-2000:]}")
    return elapsed


def proc_status_kb(field: str) -> int:
    """A `kB` field of /proc/self/status (VmRSS, VmHWM); 0 when unavailable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rate(nbytes: int, seconds: float) -> str:
    """MB/s (10^6 bytes) as text."""
    return f"{nbytes / 1e6 / seconds:.1f} MB/s" if seconds > 0 else "inf MB/s"
