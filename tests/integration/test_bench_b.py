"""`bench/bench_b.py --quick`: the B1-B7 table is produced, every row present, every value sane.

A smoke run of the whole-process benchmark at tiny sizes, one run per case, straight to its own
private sshd and through the ~20 ms latency proxy. No timing is asserted (speed belongs to the bench
itself and docs/benchmarks.md): only that each case ran, measured something, and was tabulated.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

try:
    from .services import SSHD, require_service
except ImportError:  # pytest "prepend" import mode
    from services import SSHD, require_service  # type: ignore[no-redef]

REPO = Path(__file__).resolve().parents[2]

WANT = {  # (case, first word of "what", rtt kind)
    *((c, w, r) for c in ("B1", "B2") for w in ("push", "pull") for r in ("loopback", "rtt")),
    *(("B3", "no-op", r) for r in ("loopback", "rtt")),
    *(("B4", "incremental", r) for r in ("loopback", "rtt")),
    ("B5", "sha256", "local"),
    *(("B6", "push", r) for r in ("loopback", "rtt")),
}


def test_quick_bench_produces_the_whole_table(tmp_path: Path) -> None:
    require_service("sshd", os.access(SSHD, os.X_OK), f"{SSHD} is not installed")
    require_service("ssh", bool(shutil.which("rsync") and shutil.which("ssh")), "rsync/ssh missing")
    out, rows_path = tmp_path / "table.md", tmp_path / "rows.json"
    doc_before = (REPO / "docs" / "benchmarks.md").read_text()
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "bench_b.py"),
            "--quick",
            "--out",
            str(out),
            "--json",
            str(rows_path),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads(rows_path.read_text())
    got = {(r["case"], r["what"].split()[0], "rtt" if r["rtt"].startswith("~") else r["rtt"]) for r in rows}
    assert got == WANT
    for r in rows:
        assert r["usr_s"] > 0 and r["peer_s"] > 0, r
        assert math.isfinite(r["ratio"]) and r["ratio"] > 0, r
        assert r["runs"] == 1
        assert r["usr_rss_mb"] > 5, r  # a Python process: tens of MiB at least
    b3 = [r for r in rows if r["case"] == "B3"]
    for r in b3:  # the in-process breakdown ran and counted round trips
        assert r["inproc"]["execs"] >= 1 and r["inproc"]["state"] == "NO-OP", r
        assert "exec round trips" in r["note"]
    table = out.read_text()
    for case in ("B1", "B2", "B3", "B4", "B5", "B6", "B7"):
        assert f"| {case} |" in table
    assert table.count("\n| B") == len(rows) + 1  # + the B7 row
    assert "Machine:" in table and "--quick" in table
    # --quick without --write-doc leaves the doc alone
    assert (REPO / "docs" / "benchmarks.md").read_text() == doc_before
