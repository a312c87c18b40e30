"""Built-in Infer step: score a dataset's sequences on the CPU and write `infer__*` overlay parts.

The model (documented in docs/audit-log.md's companion, and here): an order-3 Markov background
model fit on all of the dataset's sequences at the time of the run. Counts c(w, b) of base b after
every 3-mer w (A/C/G/T only) with add-one smoothing: P(b | w) = (c(w, b) + 1) / (c(w) + 4). For a
sequence x of length L, `ll_sum` = sum over i = 3..L-1 of ln P(x_i | x_{i-3..i-1}) (natural log;
positions whose context holds a non-ACGT letter are skipped), `ll_mean` = ll_sum / scored positions
(null when none), and `gc_fraction` = (G + C) / L. Deterministic: same sequences, same numbers.

Columns (float64): infer__kmer3__preset__ll_mean, infer__kmer3__preset__ll_sum,
infer__kmer3__preset__gc_fraction. Resume: rows whose outputs are all non-null are skipped; a
write that would replace a non-null value is refused unless --overwrite. Parts are written every
--chunk-size rows, so finished chunks survive a killed job.

Run: `python -m usrbatch.steps.infer --root ROOT --dataset ID [--overwrite]`
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from usrbatch import auditlog
from usrbatch.errors import SchemaError, UsrError

NAMESPACE = "infer"
PREFIX = "infer__kmer3__preset__"
OUTPUTS = ("ll_mean", "ll_sum", "gc_fraction")
COLUMNS = {PREFIX + name: "float64" for name in OUTPUTS}
ORDER = 3
BASES = "ACGT"


class KmerMarkov:
    """Order-k Markov model over A/C/G/T with add-one smoothing."""

    def __init__(self, order: int = ORDER) -> None:
        self.order = order
        self.counts: dict[str, list[int]] = {}

    def fit(self, sequences: Iterable[str]) -> KmerMarkov:
        k = self.order
        for raw in sequences:
            seq = raw.upper()
            for i in range(k, len(seq)):
                context, base = seq[i - k : i], seq[i]
                j = BASES.find(base)
                if j < 0 or any(c not in BASES for c in context):
                    continue
                self.counts.setdefault(context, [0, 0, 0, 0])[j] += 1
        return self

    def log_prob(self, context: str, base: str) -> float:
        row = self.counts.get(context, [0, 0, 0, 0])
        return math.log((row[BASES.index(base)] + 1) / (sum(row) + 4))

    def score(self, raw: str) -> tuple[float | None, float]:
        """(ll_mean, ll_sum) of one sequence; ll_mean is None when no position can be scored."""
        seq, k = raw.upper(), self.order
        total, n = 0.0, 0
        for i in range(k, len(seq)):
            context, base = seq[i - k : i], seq[i]
            if base not in BASES or any(c not in BASES for c in context):
                continue
            total += self.log_prob(context, base)
            n += 1
        return (total / n if n else None), total


def gc_fraction(raw: str) -> float:
    seq = raw.upper()
    return (seq.count("G") + seq.count("C")) / len(seq) if seq else 0.0


def run(root: Path, dataset: str, *, overwrite: bool = False, chunk_size: int = 512) -> dict:
    """Fit, score the rows that need it, write parts. Returns counts for the caller to print."""
    from usrbatch.dataset.overlay_read import read_dataset
    from usrbatch.dataset.overlay_write import write_overlay_part
    from usrbatch.dataset.ref import open_dataset
    from usrbatch.steps.namespaces import ensure_step_namespace

    started = time.monotonic()
    ref = open_dataset(root, dataset).require()
    ensure_step_namespace(ref.root, "infer")  # normally done by the loop's set-up already
    table = read_dataset(ref, include_deleted=False)  # deleted (tombstoned) rows are not scored
    ids = table["id"].to_pylist()
    sequences = table["sequence"].to_pylist()
    present = [c for c in COLUMNS if c in table.column_names]
    existing = {c: table[c].to_pylist() for c in present}
    model = KmerMarkov().fit(sequences)
    todo: list[int] = []
    refused: list[str] = []
    for row, _id in enumerate(ids):
        values = [existing[c][row] if c in existing else None for c in COLUMNS]
        if all(v is not None for v in values) and not overwrite:
            continue
        if any(v is not None for v in values) and not overwrite:
            refused.append(_id)
            continue
        todo.append(row)
    if refused:
        raise SchemaError(
            f"{len(refused)} row(s) have some infer__kmer3 outputs already (e.g. id {refused[0]}); "
            "writing would replace non-null values.",
            hint="Pass --overwrite to replace them.",
        )
    parts = 0
    for start in range(0, len(todo), chunk_size):
        rows = []
        for row in todo[start : start + chunk_size]:
            ll_mean, ll_sum = model.score(sequences[row])
            rows.append(
                {
                    "id": ids[row],
                    PREFIX + "ll_mean": ll_mean,
                    PREFIX + "ll_sum": ll_sum,
                    PREFIX + "gc_fraction": gc_fraction(sequences[row]),
                }
            )
        write_overlay_part(ref, NAMESPACE, rows)
        parts += 1
    result = {
        "rows": len(ids),
        "scored": len(todo),
        "skipped": len(ids) - len(todo),
        "parts": parts,
        "duration_s": round(time.monotonic() - started, 3),
    }
    auditlog.get_logger().info("step.infer.done", **result)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="usrbatch step infer", description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, type=Path, help="datasets root")
    parser.add_argument("--dataset", required=True, help="dataset id")
    parser.add_argument("--overwrite", action="store_true", help="rescore rows that already have values")
    parser.add_argument("--chunk-size", type=int, default=512, help="rows per overlay part (default 512)")
    args = parser.parse_args(argv)
    auditlog.configure_from_env()
    try:
        result = run(args.root, args.dataset, overwrite=args.overwrite, chunk_size=args.chunk_size)
    except UsrError as exc:
        print(f"ERROR: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"Hint: {exc.hint}", file=sys.stderr)
        return 2
    print(
        f"infer: scored {result['scored']} of {result['rows']} rows "
        f"({result['skipped']} already scored) into {result['parts']} part(s) in {result['duration_s']}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
