"""Built-in DenseGen step: dense TFBS arrays from a motif table, appended to a USR dataset.

Deterministic: the motif library of each iteration is sampled with `random.Random(f"{seed}:{iteration}")`
and the solutions come from dense-arrays (`Optimizer(...).solutions(solver="CBC")`, each solve
bounded by --time-limit). New sequences are appended as base records (ids already present are
skipped, so a rerun adds nothing) and one overlay part `_derived/densegen/part-*.parquet` carries
`densegen__run_id, densegen__plan, densegen__used_tfbs, densegen__compression_ratio, densegen__gc_total`.

Run: `python -m usrbatch.steps.densegen --root ROOT --dataset ID --tfbs tfbs.csv --count 8 ...`
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from usrbatch import auditlog
from usrbatch.errors import SchemaError, UsrError

NAMESPACE = "densegen"
COLUMNS = {
    "densegen__run_id": "string",
    "densegen__plan": "string",
    "densegen__used_tfbs": "list<string>",
    "densegen__compression_ratio": "float64",
    "densegen__gc_total": "float64",
}


@dataclass(frozen=True)
class Motif:
    tf: str
    site: str


@dataclass(frozen=True)
class DenseArrayRow:
    sequence: str
    used_tfbs: tuple[str, ...]  # "TF:SITE" in order of position
    compression_ratio: float
    gc_total: float


def read_tfbs(path: Path) -> list[Motif]:
    """Read a `tf,tfbs` CSV; raises SchemaError naming the file and line on bad input."""
    if not Path(path).is_file():
        raise SchemaError(f"TF binding-site table not found: {path}")
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"tf", "tfbs"} <= set(reader.fieldnames):
            raise SchemaError(f"{path}: expected columns 'tf,tfbs', got {reader.fieldnames}")
        motifs = []
        for lineno, row in enumerate(reader, start=2):
            site = (row["tfbs"] or "").strip().upper()
            if not site or set(site) - set("ACGT"):
                raise SchemaError(f"{path}:{lineno}: tfbs {row['tfbs']!r} must be a non-empty A/C/G/T string")
            motifs.append(Motif((row["tf"] or "").strip(), site))
    unique = list({m.site: m for m in motifs}.values())
    if len(unique) < 2:
        raise SchemaError(f"{path}: needs at least 2 distinct binding sites")
    return unique


def gc_fraction(sequence: str) -> float:
    return (sequence.count("G") + sequence.count("C")) / len(sequence) if sequence else 0.0


def sample_library(motifs: list[Motif], size: int, seed: int, iteration: int) -> list[Motif]:
    """The motif library of one iteration (fixed seed: same inputs, same library)."""
    rng = random.Random(f"{seed}:{iteration}")
    return rng.sample(motifs, min(size, len(motifs)))


def build_arrays(library: list[Motif], *, count: int, length: int, time_limit: float) -> list[DenseArrayRow]:
    """Up to `count` distinct dense arrays of at most `length` nt from `library` (CBC)."""
    import dense_arrays
    from dense_arrays.solver import SolverControls

    sites = [m.site for m in library]
    optimizer = dense_arrays.Optimizer(library=sites, sequence_length=length, strands="double")
    rows: list[DenseArrayRow] = []
    seen: set[str] = set()
    # No explicit thread count: dense-arrays 0.3 refuses one for CBC (SCIP-only control), even
    # when a job exports OMP_NUM_THREADS.
    controls = SolverControls(time_limit_seconds=time_limit)
    solutions = optimizer.solutions(solver="CBC", controls=controls)
    while len(rows) < count:
        try:
            solution = next(solutions)
        except StopIteration:
            break
        except Exception as exc:  # UnprovenSolutionError on a timed-out solve: keep what we have
            if type(exc).__name__ == "UnprovenSolutionError":
                break
            raise
        seq = solution.sequence.upper()
        if seq in seen:
            continue
        seen.add(seq)
        used = tuple(
            f"{library[index % len(library)].tf}:{library[index % len(library)].site}"
            for _offset, index in solution.offset_indices_in_order()
        )
        rows.append(DenseArrayRow(seq, used, float(solution.compression_ratio), gc_fraction(seq)))
    return rows


def _annotated_ids(ref: object) -> set[str]:
    from usrbatch.dataset.overlay_read import read_dataset

    try:
        table = read_dataset(ref, ["densegen__run_id"])  # type: ignore[arg-type]
    except SchemaError:  # no densegen overlay yet
        return set()
    return {
        i
        for i, v in zip(table["id"].to_pylist(), table["densegen__run_id"].to_pylist(), strict=True)
        if v is not None
    }


def run(
    root: Path,
    dataset: str,
    tfbs: Path,
    *,
    count: int,
    length: int,
    seed: int,
    iteration: int,
    plan: str,
    library_size: int,
    time_limit: float,
    run_id: str,
) -> dict:
    """Generate, append, annotate. Returns counts for the caller to print."""
    from usrbatch.dataset.overlay_write import write_overlay_part
    from usrbatch.dataset.records import import_records
    from usrbatch.dataset.ref import open_dataset
    from usrbatch.dataset.schema import compute_id
    from usrbatch.steps.namespaces import ensure_step_namespace

    started = time.monotonic()
    ref = open_dataset(root, dataset).require()
    motifs = read_tfbs(tfbs)
    library = sample_library(motifs, library_size, seed, iteration)
    arrays = build_arrays(library, count=count, length=length, time_limit=time_limit)
    if not arrays:
        raise UsrError(
            f"dense-arrays found no solution for {len(library)} motifs in {length} nt within {time_limit}s"
        )
    ensure_step_namespace(ref.root, "densegen")  # normally done by the loop's set-up already
    imported = import_records(
        ref,
        [{"sequence": a.sequence} for a in arrays],
        bio_type="dna",
        alphabet="dna_4",
        source=f"densegen:{plan}",
        skip_existing=True,
    )
    # Annotate only ids without densegen values yet (a rerun writes no duplicate part; a run that
    # died between import and annotation is completed).
    annotated = _annotated_ids(ref)
    pending = [a for a in arrays if compute_id("dna", a.sequence) not in annotated]
    overlay = None
    if pending:
        overlay = write_overlay_part(
            ref,
            NAMESPACE,
            [
                {
                    "id": compute_id("dna", a.sequence),
                    "densegen__run_id": run_id,
                    "densegen__plan": plan,
                    "densegen__used_tfbs": list(a.used_tfbs),
                    "densegen__compression_ratio": a.compression_ratio,
                    "densegen__gc_total": a.gc_total,
                }
                for a in pending
            ],
        )
    result = {
        "generated": len(arrays),
        "rows_written": imported.rows_written,
        "rows_skipped": imported.rows_skipped,
        "library": [f"{m.tf}:{m.site}" for m in library],
        "annotated": len(pending),
        "overlay_part": str(getattr(overlay, "path", "")) if overlay else None,
        "duration_s": round(time.monotonic() - started, 3),
    }
    auditlog.get_logger().info("step.densegen.done", **{k: v for k, v in result.items() if k != "library"})
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="usrbatch step densegen", description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, type=Path, help="datasets root")
    parser.add_argument("--dataset", required=True, help="dataset id")
    parser.add_argument("--tfbs", required=True, type=Path, help="CSV with columns tf,tfbs")
    parser.add_argument("--count", type=int, default=8, help="arrays to generate (default 8)")
    parser.add_argument("--length", type=int, default=60, help="maximum array length in nt (default 60)")
    parser.add_argument("--seed", type=int, default=7, help="library sampling seed (default 7)")
    parser.add_argument("--iteration", type=int, default=1, help="loop iteration (varies the library)")
    parser.add_argument("--plan", default="demo", help="plan name recorded in densegen__plan")
    parser.add_argument("--library-size", type=int, default=6, help="motifs per library (default 6)")
    parser.add_argument("--time-limit", type=float, default=10.0, help="seconds per CBC solve (default 10)")
    parser.add_argument("--run-id", default="local", help="recorded in densegen__run_id")
    args = parser.parse_args(argv)
    auditlog.configure_from_env()
    try:
        result = run(
            args.root,
            args.dataset,
            args.tfbs,
            count=args.count,
            length=args.length,
            seed=args.seed,
            iteration=args.iteration,
            plan=args.plan,
            library_size=args.library_size,
            time_limit=args.time_limit,
            run_id=args.run_id,
        )
    except UsrError as exc:
        print(f"ERROR: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"Hint: {exc.hint}", file=sys.stderr)
        return 2
    print(
        f"densegen: generated {result['generated']} arrays, appended {result['rows_written']} "
        f"(skipped {result['rows_skipped']} already present) in {result['duration_s']}s; library {result['library']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
