"""No-op `diff` and `pull` of a dataset with many overlay parts over ssh: wall time and round trips.

    uv run python bench/bench_noop.py [--parts 2000] [--part-kb 16] [--primary-mb 64] [--peer-sample 200]

Local and remote copies are identical (the remote copy is made with copy2, mtimes kept), served by
one private sshd (tests/integration/services.py). Measured in the same run:

  usrbatch  `plan_diff` (CLI diff options) and `pull` (CLI defaults: --verify hash, sidecars and
            content hashes on), each over a fresh SshTransport (connect included); round trips are
            the transport's `stats.execs` (exec channels) on `stats.connects` connections.
  public    the public tool's probes (usr-contract.md §9) replayed with the real OpenSSH client, one
            `ssh` connection per probe and per file: a diff = 7 stat probes + the event revision
            (stat + sha256sum of .events.log) = 9 connections; a no-op pull = the CLI preview diff
            (9) + the preliminary stat with content hashes (7 + one `sha256sum` per _derived and
            _auxiliary file) + the event revision (2) = 18 + D + A connections. The per-file loop
            runs on `--peer-sample` files and is extrapolated linearly to all D + A files (0: run
            them all; at ~0.4 s per connection on this machine 2,000 files take ~14 minutes).
  rsync -n  `rsync -a -n --delete` (one connection; size+mtime quick check, NO content hashes) and
            `rsync -a -n -c --delete` (one connection; full-file checksums on both sides).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import load_services, make_dataset_tree, report  # noqa: E402

from usrbatch import auditlog  # noqa: E402
from usrbatch.remotes import RemoteConfig  # noqa: E402
from usrbatch.sync import engine  # noqa: E402
from usrbatch.sync.options import SyncOptions  # noqa: E402
from usrbatch.transport.factory import open_transport  # noqa: E402

DATASET = "bench/ds"
RUNTIME_EXCLUDES = ["--exclude", ".events.lock", "--exclude", ".usr.lock"]
RUNTIME_EXCLUDES += ["--exclude", ".usr.transfer.lock", "--exclude", ".usr.lease.*"]


class PublicProbes:
    """One OpenSSH connection per remote probe, as the public tool does (no ControlMaster)."""

    def __init__(self, server, ds_dir: Path) -> None:
        self.argv = ["ssh", *server.ssh_options(), "-o", "ConnectTimeout=10", server.alias]
        self.ds = shlex.quote(str(ds_dir))
        self.connections = 0

    def run(self, cmd: str) -> str:
        self.connections += 1
        proc = subprocess.run([*self.argv, cmd], stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if proc.returncode == 255:
            raise SystemExit(f"ssh failed (255): {cmd}\n{proc.stderr}")
        return proc.stdout

    def stat_probes(self) -> tuple[list[str], list[str]]:
        """The 7 probes of one `stat_dataset`; returns (derived files, aux files)."""
        d = self.ds
        self.run(f"stat -c '%s %Y' {d}/records.parquet")
        self.run(f"sha256sum {d}/records.parquet")
        self.run(f"stat -c '%s %Y' {d}/meta.md")
        self.run(f"wc -l < {d}/.events.log")
        self.run(f"ls -1 {d}/_snapshots")
        derived = self.run(f"cd {d}/_derived && find . -type f -print").split()
        excl = " ".join(
            f"! -path {shlex.quote(p)}"
            for p in (
                "./records.parquet",
                "./meta.md",
                "./.events.log",
                "./.events.lock",
                "./.usr.lock",
                "./.usr.transfer.lock",
                "./.usr.lease.*",
                "./.usr.lease.*/*",
                "./_snapshots/*",
                "./_derived/*",
            )
        )
        aux = self.run(f"cd {d} && find . -type f {excl}").split()
        return [p.removeprefix("./") for p in derived], [p.removeprefix("./") for p in aux]

    def event_revision(self) -> None:
        self.run(f"stat -c '%s' {self.ds}/.events.log")
        self.run(f"sha256sum {self.ds}/.events.log")

    def diff(self) -> tuple[list[str], list[str]]:
        files = self.stat_probes()
        self.event_revision()
        return files

    def hash_files(self, rels: list[str]) -> dict[str, str]:
        out = {}
        for rel in rels:
            line = self.run(f"sha256sum {self.ds}/{shlex.quote(rel)}").split()
            out[rel] = line[0]
        return out


def usr_run(op: str, root: Path, server, base: Path) -> tuple[float, int, int, str]:
    """One usrbatch diff or pull over a fresh transport: (seconds, execs, connects, state)."""
    remote = RemoteConfig(name="bench", type="ssh", host=server.alias, user=server.user, base_dir=str(base))
    t0 = time.perf_counter()
    transport = open_transport(remote, ssh_config_path=server.ssh_config)
    try:
        if op == "diff":
            opts = SyncOptions(sidecars=False, content_hashes=False)  # what `usr diff` passes
            result = engine.plan_diff(root, DATASET, transport, opts)
        else:
            result = engine.pull(root, DATASET, transport, SyncOptions())
    finally:
        transport.close()
    elapsed = time.perf_counter() - t0
    return elapsed, transport.stats.execs, transport.stats.connects, result.transfer_state


def best_usr(op: str, root: Path, server, base: Path, repeat: int) -> tuple[float, int, int, str]:
    runs = [usr_run(op, root, server, base) for _ in range(repeat)]
    return min(runs, key=lambda r: r[0])


def rsync_dry(server, base: Path, local: Path, checksum: bool) -> tuple[float, int]:
    """rsync dry run remote→local; (seconds, number of itemized changes)."""
    argv = ["rsync", "-a", "-n", "-i", "--delete", *RUNTIME_EXCLUDES]
    if checksum:
        argv.append("-c")
    argv += ["-e", " ".join(["ssh", *server.ssh_options()]), f"{server.alias}:{base / DATASET}/", f"{local}/"]
    t0 = time.perf_counter()
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"rsync failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return elapsed, len([line for line in proc.stdout.splitlines() if line.strip()])


def remote_cache_file(dataset_dir: Path) -> Path:
    """The agent's default hash-cache file for a dataset dir (sshd sessions get no XDG vars)."""
    import hashlib

    key = hashlib.sha256(os.path.abspath(dataset_dir).encode()).hexdigest()[:32]
    return Path.home() / ".cache" / "usrbatch" / "hash-cache" / f"{key}.json"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", type=int, default=2000)
    ap.add_argument("--part-kb", type=int, default=16)
    ap.add_argument("--primary-mb", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3, help="usrbatch runs per measurement (best kept)")
    ap.add_argument(
        "--peer-sample", type=int, default=200, help="per-file ssh sha256sum calls actually run (0 = all)"
    )
    args = ap.parse_args()
    for tool in ("rsync", "ssh"):
        if not shutil.which(tool):
            print(f"{tool} not found: run scripts/services-install ssh", file=sys.stderr)
            return 2
    auditlog.configure(None)
    services = load_services()
    with tempfile.TemporaryDirectory(prefix="usrbatch-bench-") as tmp_s:
        tmp = Path(tmp_s)
        os.environ["XDG_CACHE_HOME"] = str(tmp / "xdg-cache")  # private local hash cache
        server, proc = services.start_sshd(tmp / "sshd")
        base = tmp / "remote"
        try:
            local_root = tmp / "local"
            src = make_dataset_tree(
                local_root,
                parts=args.parts,
                part_bytes=args.part_kb * 1024,
                primary_bytes=args.primary_mb * 1024 * 1024,
            )
            shutil.copytree(src, base / DATASET)  # copy2: same bytes, same mtimes
            nfiles = sum(1 for p in src.rglob("*") if p.is_file())
            print(
                f"dataset: {nfiles} files ({args.parts} overlay parts x {args.part_kb} KiB, "
                f"primary {args.primary_mb} MiB); sshd {server.host}:{server.port}; {os.cpu_count()} CPUs",
                flush=True,
            )

            # usrbatch: the first run hashes everything on both sides (cold caches) -------------
            cold = usr_run("diff", local_root, server, base)
            print(
                f"usrbatch diff, cold hash caches (every file hashed on both sides): {cold[0]:.3f}s",
                flush=True,
            )
            t_diff, ex_diff, cn_diff, st_diff = best_usr("diff", local_root, server, base, args.repeat)
            t_pull, ex_pull, cn_pull, st_pull = best_usr("pull", local_root, server, base, args.repeat)
            if st_pull != "NO-OP" or st_diff != "DIFF-ONLY":
                raise SystemExit(f"expected a no-op, got diff={st_diff} pull={st_pull}")
            print(
                f"usrbatch warm: diff {t_diff:.3f}s ({ex_diff} exec on {cn_diff} connection), "
                f"pull {t_pull:.3f}s ({ex_pull} exec on {cn_pull} connection) state={st_pull}",
                flush=True,
            )

            # the public tool's probe loop -----------------------------------------------------
            probes = PublicProbes(server, base / DATASET)
            t0 = time.perf_counter()
            probes.diff()
            t_pub_diff = time.perf_counter() - t0
            n_pub_diff = probes.connections

            probes.connections = 0
            t0 = time.perf_counter()
            probes.diff()  # the CLI's preview diff
            derived, aux = probes.stat_probes()  # the preliminary stat, with content hashes
            probes.event_revision()
            fixed = time.perf_counter() - t0
            per_file = [f"_derived/{p}" for p in derived] + aux
            sample = per_file if args.peer_sample <= 0 else per_file[: args.peer_sample]
            t0 = time.perf_counter()
            got = probes.hash_files(sample)
            t_sample = time.perf_counter() - t0
            n_pub_pull = probes.connections + len(per_file) - len(sample)
            t_pub_pull = fixed + t_sample * len(per_file) / max(1, len(sample))
            # the replay really hashed the files: its answers must match the local content
            inv = engine.local_inventory(src)
            wrong = [rel for rel, sha in got.items() if inv.files[rel].sha256 != sha]
            if wrong or not got:
                raise SystemExit(f"public-probe replay hashes disagree with the local files: {wrong[:5]}")
            how = "measured" if len(sample) == len(per_file) else f"{len(sample)} measured, extrapolated"
            print(
                f"public probes: diff {n_pub_diff} ssh connections {t_pub_diff:.2f}s; no-op pull "
                f"{n_pub_pull} ssh connections {t_pub_pull:.1f}s (fixed probes {fixed:.2f}s; per-file "
                f"sha256sum {t_sample / max(1, len(sample)):.3f}s each, {how} for {len(per_file)} files)",
                flush=True,
            )

            # rsync dry runs --------------------------------------------------------------------
            t_rn, n_rn = rsync_dry(server, base, src, checksum=False)
            t_rc, n_rc = rsync_dry(server, base, src, checksum=True)

            report(
                "no-op diff",
                t_diff,
                "public ssh-per-probe",
                t_pub_diff,
                f"round trips usrbatch={ex_diff} public={n_pub_diff}",
            )
            report(
                "no-op pull",
                t_pull,
                "public ssh-per-probe+file",
                t_pub_pull,
                f"round trips usrbatch={ex_pull} public={n_pub_pull}",
            )
            report("no-op pull", t_pull, "rsync -a -n (size+mtime only, no hashes)", t_rn, f"itemized={n_rn}")
            report("no-op pull", t_pull, "rsync -a -n -c (checksums, 1 connection)", t_rc, f"itemized={n_rc}")
        finally:
            services.stop_sshd(proc)
            remote_cache_file(base / DATASET).unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
