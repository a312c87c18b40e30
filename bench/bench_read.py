"""`usr head`, `usr validate` and `usr info` on a large dataset: time and peak memory vs pyarrow.

    uv run python bench/bench_read.py [--rows 1500000] [--parts 20] [--part-rows 100000] [-n 10]
                                      [--tombstones 0] [--repeat 3] [--dir PATH]

Builds (or reuses, with --dir) a dataset of `--rows` random 60-nt DNA records and `--parts` overlay
parts (`_derived/infer/part-*.parquet`, `--part-rows` rows each: a float, a label and an 8-float
vector per row), optionally with a public-format tombstone overlay (`_derived/usr.parquet`) that
deletes the first `--tombstones` records. Then every command runs `--repeat` times, each in a
fresh child process (interpreter start-up included, the same for every line), and the child's
own peak RSS is its VmHWM (read at exit; ru_maxrss would include the forked parent). Peers, in the same run on the same files:

  read_base: pyarrow.parquet.ParquetFile(records.parquet).read()  (one full read of the base table)
  read_all:  the same for records.parquet and every overlay file  (what "load every table" costs)

(`ParquetFile.read` is `pq.read_table` without the pyarrow.dataset/pandas imports read_table
pulls in, ~55 MB of RSS and ~0.3 s here, which would flatter usrbatch.)

Lines read `speedup=peer/usrbatch` (>1 means usrbatch is faster) and give both peak RSS values.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import report  # noqa: E402

DATASET = "bench/read"
# Every child reports its own VmHWM (peak RSS of this exec'd image) on stderr at exit.
HWM = (
    "import atexit, sys\n"
    "def _hwm():\n"
    "    for line in open('/proc/self/status'):\n"
    "        if line.startswith('VmHWM:'):\n"
    "            sys.stderr.write('VmHWM_KB=' + line.split()[1] + '\\n')\n"
    "atexit.register(_hwm)\n"
)
USR = HWM + "from usrbatch.cli.usr_main import main; main(sys.argv[1:])"
READ_BASE = HWM + "import pyarrow.parquet as pq; pq.ParquetFile(sys.argv[1]).read()"
READ_ALL = HWM + "import pyarrow.parquet as pq; [pq.ParquetFile(p).read() for p in sys.argv[1:]]"
IMPORTS_ONLY = HWM + "import pyarrow.parquet, usrbatch.cli.usr_main"


def build(root: Path, rows: int, parts: int, part_rows: int, tombstones: int, seed: int = 11) -> Path:
    """The bench dataset under root (kept when it is already there)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from usrbatch.dataset.overlays import write_overlay_part
    from usrbatch.dataset.records import import_records, init_dataset
    from usrbatch.dataset.ref import open_dataset
    from usrbatch.dataset.registry import register_namespace

    ref = open_dataset(root, DATASET)
    if ref.records.is_file():
        return ref.dir
    rng = random.Random(seed)
    t0 = time.perf_counter()
    init_dataset(root, DATASET, source="bench")
    register_namespace(root, "infer", "infer__ll:float64,infer__label:string,infer__v:list<float64>")
    seqs: set[str] = set()
    while len(seqs) < rows:
        seqs.add("".join(rng.choices("ACGT", k=60)))
    import_records(ref, pa.table({"sequence": sorted(seqs, key=lambda _: rng.random())}), source="bench")
    del seqs
    ids = pq.read_table(ref.records, columns=["id"])["id"].to_pylist()
    for part in range(parts):
        # part 0 covers the first rows (what head shows); the others random rows, overlapping
        chosen = ids[:part_rows] if part == 0 else rng.sample(ids, min(part_rows, len(ids)))
        write_overlay_part(
            ref,
            "infer",
            pa.table(
                {
                    "id": chosen,
                    "infer__ll": [part + i / len(chosen) for i in range(len(chosen))],
                    "infer__label": [f"p{part}"] * len(chosen),
                    "infer__v": [[float(part)] * 8] * len(chosen),
                }
            ),
        )
    if tombstones:
        when = pa.scalar(1_700_000_000_000_000, pa.timestamp("us", tz="UTC"))
        pq.write_table(
            pa.table(
                {
                    "id": ids[:tombstones],
                    "usr__deleted": [True] * tombstones,
                    "usr__deleted_at": pa.array([when.value] * tombstones, pa.timestamp("us", tz="UTC")),
                    "usr__deleted_reason": ["bench"] * tombstones,
                }
            ).replace_schema_metadata({"usr:overlay_namespace": "usr", "usr:overlay_key": "id"}),
            ref.dir / "_derived" / "usr.parquet",
        )
    print(f"built {ref.dir} in {time.perf_counter() - t0:.1f}s", flush=True)
    return ref.dir


def run_child(argv: list[str]) -> tuple[float, float, int]:
    """(wall seconds, peak RSS MB, exit code) of one child process (exit 2 = a reported problem)."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    elapsed = time.perf_counter() - t0
    if proc.returncode not in (0, 2):
        raise SystemExit(f"{argv[:4]} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    kb = [int(line.split("=", 1)[1]) for line in proc.stderr.splitlines() if line.startswith("VmHWM_KB=")]
    return elapsed, (kb[-1] / 1024 if kb else float("nan")), proc.returncode


def measure(argv: list[str], repeat: int) -> tuple[float, float, int]:
    """Best time and the highest peak RSS over `repeat` runs."""
    runs = [run_child(argv) for _ in range(repeat)]
    return min(r[0] for r in runs), max(r[1] for r in runs), runs[-1][2]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_500_000)
    ap.add_argument("--parts", type=int, default=20)
    ap.add_argument("--part-rows", type=int, default=100_000)
    ap.add_argument("-n", type=int, default=10, help="rows for `usr head -n`")
    ap.add_argument("--tombstones", type=int, default=0, help="first N records tombstoned (usr__deleted)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=None, help="datasets root to build in / reuse (kept)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="usrbatch-bench-read-") as tmp:
        root = (args.dir or Path(tmp)).absolute()
        root.mkdir(parents=True, exist_ok=True)
        ds = build(root, args.rows, args.parts, args.part_rows, args.tombstones)
        records = ds / "records.parquet"
        overlays = sorted(str(p) for p in (ds / "_derived").rglob("*.parquet"))
        mb = sum(Path(p).stat().st_size for p in [str(records), *overlays]) / 1e6
        print(
            f"dataset: {args.rows} rows, records.parquet {records.stat().st_size / 1e6:.1f} MB, "
            f"{len(overlays)} overlay files, {mb:.1f} MB in all",
            flush=True,
        )
        py = sys.executable
        usr = [py, "-c", USR, "--root", str(root)]
        floor_t, floor_rss, _ = measure([py, "-c", IMPORTS_ONLY], args.repeat)
        base_t, base_rss, _ = measure([py, "-c", READ_BASE, str(records)], args.repeat)
        all_t, all_rss, _ = measure([py, "-c", READ_ALL, str(records), *overlays], args.repeat)
        print(
            f"start-up floor (interpreter + pyarrow.parquet + usr CLI imports): {floor_t:.3f}s, peak RSS {floor_rss:.0f} MB"
        )
        print(f"peer read_base: {base_t:.3f}s, peak RSS {base_rss:.0f} MB")
        print(f"peer read_all: {all_t:.3f}s, peak RSS {all_rss:.0f} MB")
        for name, argv, peer_name, peer_t, peer_rss in (
            (f"usr head -n {args.n}", [*usr, "head", DATASET, "-n", str(args.n)], "read_all", all_t, all_rss),
            ("usr validate", [*usr, "validate", DATASET], "read_base", base_t, base_rss),
            ("usr info", [*usr, "info", DATASET], "read_base", base_t, base_rss),
        ):
            t, rss, code = measure(argv, args.repeat)
            report(
                name,
                t,
                peer_name,
                peer_t,
                f"peak_rss usrbatch={rss:.0f}MB {peer_name}={peer_rss:.0f}MB "
                f"rss_ratio={peer_rss / rss:.2f}x exit={code}",
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
