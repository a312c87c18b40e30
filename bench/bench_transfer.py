"""Bootstrap push, bootstrap pull and incremental push: usrbatch (SshTransport) vs rsync and scp.

    uv run python bench/bench_transfer.py [--primary-mb 256] [--parts 200] [--part-kb 256] [--changed 2]

Everything runs against one private sshd (tests/integration/services.py) on this machine, on the
same dataset tree, in the same run:

  (a) bootstrap push:  usrbatch `push`  vs  `rsync -a -e ssh`, rsync with the public tool's flags
                       (-rltz --partial --delete-delay --delay-updates ... + excludes), `scp -r`
  (b) bootstrap pull:  usrbatch `pull`  vs  the same three in the other direction
  (c) incremental push after rewriting `--changed` parts and appending to .events.log:
                       usrbatch `push`  vs  `rsync -a` and rsync with the public flags (delta)

Every destination tree is checked byte-identical to its source. Each usrbatch operation runs in a
fresh child process (spawn) so its peak RSS (VmHWM) is its own; the time is measured in the child
around the engine call (connection set-up included, interpreter start-up excluded). Lines read
`speedup=peer/usrbatch` (>1 means usrbatch is faster).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    check_identical,
    load_services,
    make_dataset_tree,
    proc_status_kb,
    rate,
    report,
    run_timed,
    tree_digest,
)

DATASET = "bench/ds"
PUBLIC_RSYNC_FLAGS = [  # usr-contract.md §9: the public tool's rsync invocation (dataset mode)
    "-rltz",
    "--partial",
    "--protect-args",
    "--delete-delay",
    "--delay-updates",
    "--no-perms",
    "--no-owner",
    "--no-group",
    "--omit-dir-times",
    "--exclude",
    ".events.lock",
    "--exclude",
    ".usr.lock",
    "--exclude",
    ".usr.transfer.lock",
    "--exclude",
    ".usr.lease.*",
]


def usr_op(op: str, root: str, base: str, ssh_config: str, alias: str, user: str, cache: str) -> dict:
    """Child process: one engine push/pull over a fresh SshTransport; time, stats, peak RSS."""
    os.environ["XDG_CACHE_HOME"] = cache
    from usrbatch import auditlog
    from usrbatch.remotes import RemoteConfig
    from usrbatch.sync import engine, stages
    from usrbatch.sync.options import SyncOptions
    from usrbatch.transport.factory import open_transport

    auditlog.configure(None)  # audit events dropped: the benchmark prints its own lines
    phases: dict[str, float] = {}

    def timed_call(name: str, fn):
        def wrapper(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                phases[name] = phases.get(name, 0.0) + time.perf_counter() - t0

        return wrapper

    # Instrumentation only (this child process): where the wall time goes.
    stages.local_inventory = timed_call("local_inventory", stages.local_inventory)  # what observe() calls
    remote = RemoteConfig(name="bench", type="ssh", host=alias, user=user, base_dir=base)
    rss_before = proc_status_kb("VmRSS")
    transport = open_transport(remote, ssh_config_path=Path(ssh_config))
    for name in ("inventory", "upload", "download", "apply", "remote_hashes", "mkdirs"):
        setattr(transport, name, timed_call(name, getattr(transport, name)))
    fn = engine.push if op == "push" else engine.pull
    t0 = time.perf_counter()
    try:
        result = fn(Path(root), DATASET, transport, SyncOptions())
    finally:
        transport.close()
    elapsed = time.perf_counter() - t0
    s = transport.stats
    return {
        "seconds": elapsed,
        "state": result.transfer_state,
        "files": result.files_sent,
        "bytes": result.bytes_sent,
        "execs": s.execs,
        "connects": s.connects,
        "sftp_sessions": s.sftp_sessions,
        "rss_before_kb": rss_before,
        "hwm_kb": proc_status_kb("VmHWM"),
        "phases": phases,
    }


def run_usr(op: str, root: Path, base: Path, server, cache: Path) -> dict:
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        args = (op, str(root), str(base), str(server.ssh_config), server.alias, server.user, str(cache))
        out = pool.submit(usr_op, *args).result()
    phases = " ".join(f"{k}={v:.2f}s" for k, v in sorted(out["phases"].items(), key=lambda kv: -kv[1]))
    print(
        f"  usrbatch {op}: {out['seconds']:.3f}s state={out['state']} files={out['files']} "
        f"execs={out['execs']} connects={out['connects']} sftp_sessions={out['sftp_sessions']} "
        f"peakRSS={out['hwm_kb'] / 1024:.0f}MB (after imports {out['rss_before_kb'] / 1024:.0f}MB)",
        flush=True,
    )
    print(f"    time in transport/inventory calls (nested calls overlap): {phases}", flush=True)
    return out


def rewrite_parts(ds: Path, changed: int, seed: int = 11) -> None:
    """Rewrite `changed` overlay parts with new bytes (same size) and append one event line."""
    rng = random.Random(seed)
    parts = sorted((ds / "_derived" / "infer").glob("part-*.parquet"))
    for path in rng.sample(parts, min(changed, len(parts))):
        path.write_bytes(rng.randbytes(path.stat().st_size))
    with (ds / ".events.log").open("a") as fh:
        fh.write('{"action":"bench_incremental"}\n')


def remote_cache_file(dataset_dir: Path) -> Path:
    """The agent's default hash-cache file for a dataset dir (sshd sessions get no XDG vars)."""
    import hashlib

    key = hashlib.sha256(os.path.abspath(dataset_dir).encode()).hexdigest()[:32]
    return Path.home() / ".cache" / "usrbatch" / "hash-cache" / f"{key}.json"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--primary-mb", type=int, default=256)
    ap.add_argument("--parts", type=int, default=200)
    ap.add_argument("--part-kb", type=int, default=256)
    ap.add_argument("--changed", type=int, default=2, help="parts rewritten for the incremental push")
    args = ap.parse_args()
    for tool in ("rsync", "scp", "ssh"):
        if not shutil.which(tool):
            print(f"{tool} not found: run scripts/services-install ssh", file=sys.stderr)
            return 2
    services = load_services()
    with tempfile.TemporaryDirectory(prefix="usrbatch-bench-") as tmp_s:
        tmp = Path(tmp_s)
        cache = tmp / "xdg-cache"  # private local hash cache, cold at the start
        server, proc = services.start_sshd(tmp / "sshd")
        remote_caches: list[Path] = []
        try:
            ssh_e = " ".join(["ssh", *server.ssh_options()])
            rsync_a = ["rsync", "-a", "-e", ssh_e]
            rsync_pub = ["rsync", *PUBLIC_RSYNC_FLAGS, "-e", ssh_e]
            scp = ["scp", "-r", "-p", *server.ssh_options()]
            at = f"{server.alias}:"

            src_root = tmp / "src"
            src = make_dataset_tree(
                src_root,
                parts=args.parts,
                part_bytes=args.part_kb * 1024,
                primary_bytes=args.primary_mb * 1024 * 1024,
            )
            want = tree_digest(src)
            total = sum(size for size, _ in want.values())
            print(
                f"dataset: {len(want)} files, {total / 1e6:.1f} MB "
                f"(primary {args.primary_mb} MiB + {args.parts} x {args.part_kb} KiB); "
                f"sshd {server.host}:{server.port}; {os.cpu_count()} CPUs",
                flush=True,
            )
            bases = {name: tmp / f"remote-{name}" for name in ("usr", "rsync", "pub", "scp")}
            for base in bases.values():
                (base / "bench").mkdir(parents=True)
            remote_caches.append(remote_cache_file(bases["usr"] / DATASET))

            # (a) bootstrap push ---------------------------------------------------------------
            print("(a) bootstrap push", flush=True)
            ours = run_usr("push", src_root, bases["usr"], server, cache)
            check_identical("usrbatch push", want, bases["usr"] / DATASET)
            t_rsync = run_timed([*rsync_a, f"{src}/", f"{at}{bases['rsync'] / DATASET}/"])
            check_identical("rsync -a push", want, bases["rsync"] / DATASET)
            t_pub = run_timed([*rsync_pub, f"{src}/", f"{at}{bases['pub'] / DATASET}/"])
            check_identical("rsync public-flags push", want, bases["pub"] / DATASET)
            t_scp = run_timed([*scp, str(src), f"{at}{bases['scp'] / DATASET}"])
            check_identical("scp -r push", want, bases["scp"] / DATASET)
            t = ours["seconds"]
            print(
                f"  rates: usrbatch {rate(total, t)}, rsync -a {rate(total, t_rsync)}, "
                f"rsync public {rate(total, t_pub)}, scp {rate(total, t_scp)}"
            )
            report("bootstrap push", t, "rsync -a", t_rsync)
            report("bootstrap push", t, "rsync -rltz (public flags)", t_pub)
            report("bootstrap push", t, "scp -r", t_scp)
            push_rss = ours["hwm_kb"]

            # (b) bootstrap pull ---------------------------------------------------------------
            print("(b) bootstrap pull", flush=True)
            dests = {name: tmp / f"pull-{name}" for name in ("usr", "rsync", "pub", "scp")}
            for d in dests.values():
                (d / "bench").mkdir(parents=True)
            ours = run_usr("pull", dests["usr"], bases["usr"], server, cache)
            check_identical("usrbatch pull", want, dests["usr"] / DATASET)
            t_rsync = run_timed(
                [*rsync_a, f"{at}{bases['rsync'] / DATASET}/", f"{dests['rsync'] / DATASET}/"]
            )
            check_identical("rsync -a pull", want, dests["rsync"] / DATASET)
            t_pub = run_timed([*rsync_pub, f"{at}{bases['pub'] / DATASET}/", f"{dests['pub'] / DATASET}/"])
            check_identical("rsync public-flags pull", want, dests["pub"] / DATASET)
            t_scp = run_timed([*scp, f"{at}{bases['scp'] / DATASET}", str(dests["scp"] / DATASET)])
            check_identical("scp -r pull", want, dests["scp"] / DATASET)
            t = ours["seconds"]
            print(
                f"  rates: usrbatch {rate(total, t)}, rsync -a {rate(total, t_rsync)}, "
                f"rsync public {rate(total, t_pub)}, scp {rate(total, t_scp)}"
            )
            report("bootstrap pull", t, "rsync -a", t_rsync)
            report("bootstrap pull", t, "rsync -rltz (public flags)", t_pub)
            report("bootstrap pull", t, "scp -r", t_scp)
            pull_rss = ours["hwm_kb"]

            # (c) incremental push -------------------------------------------------------------
            print(f"(c) incremental push: {args.changed} parts rewritten + 1 event line appended", flush=True)
            rewrite_parts(src, args.changed)
            want = tree_digest(src)
            ours = run_usr("push", src_root, bases["usr"], server, cache)
            check_identical("usrbatch incremental push", want, bases["usr"] / DATASET)
            t_rsync = run_timed([*rsync_a, f"{src}/", f"{at}{bases['rsync'] / DATASET}/"])
            check_identical("rsync -a incremental push", want, bases["rsync"] / DATASET)
            t_pub = run_timed([*rsync_pub, f"{src}/", f"{at}{bases['pub'] / DATASET}/"])
            check_identical("rsync public-flags incremental push", want, bases["pub"] / DATASET)
            t = ours["seconds"]
            extra = f"usrbatch execs={ours['execs']} connects={ours['connects']}"
            report("incremental push", t, "rsync -a", t_rsync, extra)
            report("incremental push", t, "rsync -rltz (public flags)", t_pub)

            print(
                f"peak RSS of the usrbatch process: push {push_rss / 1024:.0f} MB, "
                f"pull {pull_rss / 1024:.0f} MB, for a {args.primary_mb} MiB primary (streamed)",
                flush=True,
            )
        finally:
            services.stop_sshd(proc)
            for path in remote_caches:
                path.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
