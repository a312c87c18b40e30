"""Inventory hashing vs `sha256sum`, measured in the same run on the same files.

    uv run python bench/bench_inventory.py [--parts 200] [--part-kb 64] [--primary-mb 64]

Prints three ratios: a cold inventory (every file hashed) against `sha256sum` over the same files,
a warm inventory (hash cache hit: nothing re-hashed) against `sha256sum` again, and the size of
memory used (bounded: streamed hashing).
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import drop_env_cache, make_dataset_tree, report, timed  # noqa: E402

from usrbatch.agent import remote as agent  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--parts", type=int, default=200)
    ap.add_argument("--part-kb", type=int, default=64)
    ap.add_argument("--primary-mb", type=int, default=64)
    args = ap.parse_args()
    drop_env_cache()
    if not shutil.which("sha256sum"):
        print("sha256sum not found: install coreutils", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="usrbatch-bench-") as tmp:
        ds = make_dataset_tree(
            Path(tmp),
            parts=args.parts,
            part_bytes=args.part_kb * 1024,
            primary_bytes=args.primary_mb * 1024 * 1024,
        )
        files = sorted(str(p) for p in ds.rglob("*") if p.is_file())
        cache = Path(tmp) / "cache.json"
        total = sum(Path(f).stat().st_size for f in files)

        def peer() -> None:
            subprocess.run(["sha256sum", *files], check=True, stdout=subprocess.DEVNULL)

        def cold() -> None:
            cache.unlink(missing_ok=True)
            agent.inventory(str(ds), hashes=True, cache_path=str(cache))

        def warm() -> None:
            agent.inventory(str(ds), hashes=True, cache_path=str(cache))

        peer()  # warm the page cache for both sides equally
        t_peer = timed(peer)
        t_cold = timed(cold)
        cold()
        t_warm = timed(warm)
        mb = total / 1e6
        report(
            "inventory cold (hash every file)", t_cold, "sha256sum", t_peer, f"files={len(files)} MB={mb:.1f}"
        )
        report("inventory warm (hash cache)", t_warm, "sha256sum", t_peer, f"files={len(files)}")
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS of this process: {rss_mb:.0f} MB for {mb:.0f} MB hashed (streamed)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
