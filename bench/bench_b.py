"""Issue 11's table B1-B6: whole `usr` processes against their peers, at loopback and ~20 ms RTT.

    uv run python bench/bench_b.py --full --write-doc      # the issue's sizes; rewrites the table in
                                                           # docs/benchmarks.md (between its markers)
    uv run python bench/bench_b.py                         # reduced sizes (default), prints the table
    uv run python bench/bench_b.py --quick --out T.md      # smoke sizes, 1 run (what the tests run)
    options: --runs N  --rtt-ms 20 (0: loopback only)  --transport paramiko|openssh  --only B1,B3

Every timed command is a whole process, as a user types it (`usr ... push`, `rsync ...`), start-up
included. usrbatch and its peer alternate inside each run (the order flips every run), each case
runs `--runs` times and the table shows medians; ratio = peer median / usrbatch median (above 1
usrbatch is faster). Each case runs twice: straight to a private sshd on 127.0.0.1
(tests/integration/services.py `start_sshd`) and through bench/latency_proxy.py (10 ms each way,
so ~20 ms round trip) in front of the same sshd. Beside each case, one in-process run of the same
engine call gives the breakdown (exec round trips, connections) and, where a target is missed,
the top of its cProfile.

  B1  one big file (a dataset of a single records.parquet), bootstrap push and pull  vs  rsync -a -e ssh
  B2  records.parquet + many ~8 KiB overlay parts, bootstrap push and pull           vs  rsync -a -e ssh
  B3  no-op pull of B2's dataset, default verification                               vs  rsync -a -n -c
      (+ exec round trips in-process at two part counts: constant in file count?)
  B4  incremental push: 3 parts rewritten + one event line                           vs  rsync -a
  B5  verification hashing of one big file (usrbatch's sha256_file)                  vs  hashlib
  B6  peak RSS (ru_maxrss of the `usr push` process) pushing a big dataset           target < 150 MiB
  B7  belongs to the `cluster` work (submit-loop on SGE and Slurm): a row says so.

Payload checks refuse fake parquet, so the data are real parquet tables (core schema, random
uncompressed sequences, so bytes on disk ≈ the size asked for).
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import datetime
import io
import json
import os
import platform
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import load_services  # noqa: E402
from latency_proxy import DelayProxy  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks.md"
START, END = "<!-- bench_b:start -->", "<!-- bench_b:end -->"
DS = "bench/ds"
MiB = 1 << 20
EXCLUDES = ["--exclude", ".events.lock", "--exclude", ".usr.lock"]
EXCLUDES += ["--exclude", ".usr.transfer.lock", "--exclude", ".usr.lease.*"]
TIME = Path("/usr/bin/time").exists()  # GNU time: peak RSS of exactly the measured process


@dataclasses.dataclass(frozen=True)
class Sizes:
    b1_mb: int
    b2_mb: int
    b2_parts: int
    part_kb: int
    b3_small_parts: int
    b4_changed: int
    b5_mb: int
    b6_mb: int
    runs: int


FULL = Sizes(512, 256, 2000, 8, 500, 3, 1024, 2048, 5)
REDUCED = Sizes(64, 32, 2000, 8, 500, 3, 256, 256, 3)
QUICK = Sizes(4, 2, 40, 8, 10, 3, 16, 8, 1)

TARGETS = {  # case -> (text, ratio needed) ; B6 is a size bound, handled apart
    "B1": ("≥ 1.0× rsync -e ssh", 1.0),
    "B2": ("≥ 1.0× rsync -a -e ssh", 1.0),
    "B3": ("≥ 1.0× rsync -a -n -c (cold master)", 1.0),
    "B4": ("≥ 0.8× rsync -a", 0.8),
    "B5": ("≥ 0.9× hashlib", 0.9),
}


# -- data ------------------------------------------------------------------------------------


def write_records(path: Path, nbytes: int, seed: int) -> None:
    """A core-schema records.parquet of ~nbytes (random 4,000-nt sequences, no compression)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from usrbatch.dataset.schema import CORE_SCHEMA

    rng = np.random.default_rng(seed)
    seq_len = 4000
    rows_total = max(1, nbytes // seq_len)
    path.parent.mkdir(parents=True, exist_ok=True)
    created = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    with pq.ParquetWriter(path, CORE_SCHEMA, compression="none", use_dictionary=False) as writer:
        done = 0
        while done < rows_total:
            n = min(4096, rows_total - done)  # ~16 MiB per batch: bounded memory
            letters = np.frombuffer(b"ACGT", dtype=np.uint8)[rng.integers(0, 4, n * seq_len)]
            offsets = pa.py_buffer(np.arange(0, (n + 1) * seq_len, seq_len, dtype=np.int32).tobytes())
            seqs = pa.StringArray.from_buffers(n, offsets, pa.py_buffer(letters.tobytes()))
            table = pa.table(
                {
                    "id": pa.array([f"s{seed}-{done + i}" for i in range(n)]),
                    "bio_type": pa.array(["dna"] * n),
                    "sequence": seqs,
                    "alphabet": pa.array(["dna_4"] * n),
                    "length": pa.array([seq_len] * n, pa.int32()),
                    "source": pa.array(["bench"] * n),
                    "created_at": pa.array([created] * n, pa.timestamp("us", tz="UTC")),
                },
                schema=CORE_SCHEMA,
            )
            writer.write_table(table)
            done += n


def write_part(path: Path, nbytes: int, seed: int) -> None:
    """An overlay part of ~nbytes: `id` + one float64 column of random values."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = max(1, nbytes // 24)
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({"id": [f"s{i}" for i in range(rows)], "infer__score": rng.random(rows)})
    pq.write_table(table, path, compression="none", use_dictionary=False)


def make_dataset(root: Path, *, records_mb: float, parts: int, part_kb: int, seed: int = 7) -> Path:
    ds = root / DS
    write_records(ds / "records.parquet", int(records_mb * MiB), seed)
    (ds / "meta.md").write_text("# bench\n")
    event = {"event_version": 1, "action": "init", "args": {}}
    (ds / ".events.log").write_text(json.dumps(event, separators=(",", ":")) + "\n")
    for i in range(parts):
        write_part(ds / "_derived" / "infer" / f"part-{i:05d}.parquet", part_kb * 1024, seed * 100_000 + i)
    return ds


# -- running things --------------------------------------------------------------------------


@dataclasses.dataclass
class Run:
    seconds: float
    maxrss_kb: int


def run_proc(argv: list[str], env: dict[str, str]) -> Run:
    """One whole process; wall time and its own peak RSS. Fails loudly.

    The peak RSS comes from GNU time (`%M`), not from our wait4(): a child forked from this
    (large) process carries our high-water mark across exec, `time`'s child does not."""
    with tempfile.NamedTemporaryFile(prefix="bench-rss-", suffix=".txt") as rss_file:
        timed = ["/usr/bin/time", "-f", "%M", "-o", rss_file.name, *argv] if TIME else argv
        t0 = time.perf_counter()
        proc = subprocess.run(timed, env=env, stdin=subprocess.DEVNULL, capture_output=True)
        elapsed = time.perf_counter() - t0
        if proc.returncode != 0:
            out = (proc.stdout + proc.stderr).decode(errors="replace")[-3000:]
            raise SystemExit(f"failed ({proc.returncode}): {' '.join(argv)}\n{out}")
        text = Path(rss_file.name).read_text().split()
    return Run(elapsed, int(text[-1]) if TIME and text and text[-1].isdigit() else 0)


class Bench:
    def __init__(self, args: argparse.Namespace, sizes: Sizes, tmp: Path, server) -> None:
        self.args = args
        self.sizes = sizes
        self.tmp = tmp
        self.server = server
        self.usr = shutil.which("usr", path=str(Path(sys.executable).parent)) or "usr"
        self.rows: list[dict] = []
        self.profiles: dict[str, str] = {}
        self.remote_dirs: list[Path] = []
        self._n = 0

    # remotes and ssh set-up -----------------------------------------------------------------

    def write_ssh(self, proxy_port: int | None) -> None:
        """ssh_config with two aliases (bench-lo: straight; bench-rtt: through the proxy)."""
        s = self.server
        pub = s.known_hosts.read_text().split()[1:3]
        kh = self.tmp / "known_hosts"
        lines = [f"[{s.host}]:{s.port} {pub[0]} {pub[1]}"]
        if proxy_port:
            lines.append(f"[127.0.0.1]:{proxy_port} {pub[0]} {pub[1]}")
        kh.write_text("\n".join(lines) + "\n")
        blocks = []
        for alias, host, port in (("bench-lo", s.host, s.port), ("bench-rtt", "127.0.0.1", proxy_port)):
            if port is None:
                continue
            blocks.append(
                f"Host {alias}\n    HostName {host}\n    Port {port}\n    User {s.user}\n"
                f"    IdentityFile {s.client_key}\n    IdentitiesOnly yes\n    UserKnownHostsFile {kh}\n"
                "    GlobalKnownHostsFile /dev/null\n    StrictHostKeyChecking yes\n    UpdateHostKeys no\n"
                "    PasswordAuthentication no\n    KbdInteractiveAuthentication no\n"
                "    ConnectTimeout 20\n    LogLevel ERROR\n"
            )
        self.ssh_config = self.tmp / "ssh_config"
        self.ssh_config.write_text("\n".join(blocks))
        self.env = {
            **os.environ,
            "USRBATCH_SSH_CONFIG": str(self.ssh_config),
            "XDG_CACHE_HOME": str(self.tmp / "xdg-cache"),
        }
        self.env.pop("USRBATCH_AUDIT_LOG", None)

    def remote_base(self, tag: str) -> Path:
        self._n += 1
        base = self.tmp / "remote" / f"{tag}-{self._n}"
        (base / "bench").mkdir(parents=True)
        self.remote_dirs.append(base / DS)
        return base

    def remotes_yaml(self, alias: str, base: Path) -> Path:
        from usrbatch.remotes import RemoteConfig

        key = ""
        if "transport" in {f.name for f in dataclasses.fields(RemoteConfig)}:
            key = f"    transport: {self.args.transport}\n"
        elif self.args.transport != "paramiko":
            raise SystemExit("--transport openssh: this checkout has no `transport:` key (paramiko only)")
        cfg = base.parent / f"{base.name}.remotes.yaml"
        cfg.write_text(
            f"remotes:\n  b:\n    type: ssh\n    host: {alias}\n    user: {self.server.user}\n"
            f"    base_dir: '{base}'\n{key}"
        )
        return cfg

    def close_masters(self, aliases: list[str]) -> None:
        """openssh: end the ControlMasters our commands left (ControlPersist) before sshd stops."""
        if self.args.transport != "openssh" or not hasattr(self, "env"):
            return
        for alias in aliases:
            try:
                cfg = self.remotes_yaml(alias, self.remote_base("close"))
                run_proc(self.usr_argv(self.tmp, cfg, "remotes", "close", "b"), self.env)
            except (SystemExit, OSError) as exc:
                print(f"could not close the {alias} master: {exc}", file=sys.stderr)

    def usr_argv(self, root: Path, cfg: Path, *args: str) -> list[str]:
        return [self.usr, "--root", str(root), "--remotes-config", str(cfg), *args]

    def rsync(self, alias: str, *args: str) -> list[str]:
        return ["rsync", *args, *EXCLUDES, "-e", f"ssh -F {self.ssh_config} -o BatchMode=yes"]

    # measuring ------------------------------------------------------------------------------

    def alternate(
        self, ours: Callable[[], Run], peer: Callable[[], Run], prepare: Callable[[], None] | None = None
    ) -> tuple[list[Run], list[Run]]:
        a: list[Run] = []
        b: list[Run] = []
        for i in range(self.sizes.runs):
            order = [(ours, a), (peer, b)] if i % 2 == 0 else [(peer, b), (ours, a)]
            if prepare:
                prepare()
            for fn, out in order:
                out.append(fn())
        return a, b

    def row(self, case: str, what: str, rtt: str, ours: list[Run], peer: list[Run], peer_name: str, **kw):
        u = statistics.median(r.seconds for r in ours)
        p = statistics.median(r.seconds for r in peer)
        rss = max(r.maxrss_kb for r in ours) / 1024
        row = {
            "case": case,
            "what": what,
            "rtt": rtt,
            "usr_s": u,
            "peer": peer_name,
            "peer_s": p,
            "ratio": p / u if u > 0 else float("inf"),
            "runs": len(ours),
            "usr_rss_mb": rss,
            **kw,
        }
        self.rows.append(row)
        print(
            f"{case} {what} [{rtt}]: usr {u:.3f}s ({len(ours)} runs, peak {rss:.0f} MiB) "
            f"{peer_name} {p:.3f}s ratio {row['ratio']:.2f}x {kw.get('note', '')}",
            flush=True,
        )
        return row

    def inprocess(
        self, key: str, op: str, root: Path, alias: str, base: Path, always: bool = False
    ) -> dict | None:
        """The same engine call in this process (fresh transport): seconds, round trips, profile.
        Skipped in --quick unless `always` (B3's round-trip count)."""
        if self.args.quick and not always:
            return None
        from usrbatch import auditlog
        from usrbatch.remotes import RemoteConfig
        from usrbatch.sync import engine
        from usrbatch.sync.options import SyncOptions
        from usrbatch.transport.factory import open_transport

        auditlog.configure(None)
        os.environ["XDG_CACHE_HOME"] = self.env["XDG_CACHE_HOME"]
        extra = {}
        if "transport" in {f.name for f in dataclasses.fields(RemoteConfig)}:
            extra["transport"] = self.args.transport
        remote = RemoteConfig(
            name="b", type="ssh", host=alias, user=self.server.user, base_dir=str(base), **extra
        )
        prof = cProfile.Profile()
        t0 = time.perf_counter()
        transport = open_transport(remote, ssh_config_path=self.ssh_config)
        try:
            fn = engine.push if op == "push" else engine.pull
            prof.enable()
            result = fn(root, DS, transport, SyncOptions())
            prof.disable()
        finally:
            transport.close()
        seconds = time.perf_counter() - t0
        stats = getattr(transport, "stats", None)
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(12)
        self.profiles[key] = buf.getvalue()
        return {
            "seconds": seconds,
            "execs": getattr(stats, "execs", None),
            "connects": getattr(stats, "connects", None),
            "state": result.transfer_state,
        }

    # the cases ------------------------------------------------------------------------------

    def transfer_case(self, case: str, src_root: Path, rtts: list[tuple[str, str]]) -> None:
        for rtt, alias in rtts:
            self._transfer_case_at(case, src_root, rtt, alias)

    def _transfer_case_at(self, case: str, src_root: Path, rtt: str, alias: str) -> None:
        src = src_root / DS

        # push: a fresh empty remote per run, for both tools
        def usr_push() -> Run:
            base = self.remote_base(f"{case}-usr-push")
            return run_proc(
                self.usr_argv(src_root, self.remotes_yaml(alias, base), "push", DS, "b", "-y"), self.env
            )

        def rsync_push() -> Run:
            base = self.remote_base(f"{case}-rsync-push")
            return run_proc(self.rsync(alias, "-a") + [f"{src}/", f"{alias}:{base / DS}/"], self.env)

        ours, peer = self.alternate(usr_push, rsync_push)
        base = self.remote_base(f"{case}-inproc")
        ip = self.inprocess(f"{case} push {rtt}", "push", src_root, alias, base)
        self.row(case, "push", rtt, ours, peer, "rsync -a -e ssh", inproc=ip)

        # pull: from one populated remote into a fresh empty local root per run
        served = self.remote_base(f"{case}-served")
        run_proc(self.rsync(alias, "-a") + [f"{src}/", f"{alias}:{served / DS}/"], self.env)
        cfg = self.remotes_yaml(alias, served)

        def usr_pull() -> Run:
            local = self.tmp / "pulls" / f"u{time.monotonic_ns()}"
            local.mkdir(parents=True)
            try:
                return run_proc(self.usr_argv(local, cfg, "pull", DS, "b", "-y"), self.env)
            finally:
                shutil.rmtree(local)

        def rsync_pull() -> Run:
            local = self.tmp / "pulls" / f"r{time.monotonic_ns()}"
            (local / "bench").mkdir(parents=True)
            try:
                return run_proc(
                    self.rsync(alias, "-a") + [f"{alias}:{served / DS}/", f"{local / DS}/"], self.env
                )
            finally:
                shutil.rmtree(local)

        ours, peer = self.alternate(usr_pull, rsync_pull)
        local = self.tmp / "pulls" / "inproc"
        local.mkdir(parents=True)
        ip = self.inprocess(f"{case} pull {rtt}", "pull", local, alias, served)
        shutil.rmtree(local)
        self.row(case, "pull", rtt, ours, peer, "rsync -a -e ssh", inproc=ip)

    def noop_case(self, src_root: Path, small_root: Path, rtts: list[tuple[str, str]]) -> None:
        for rtt, alias in rtts:
            self._noop_case_at(src_root, small_root, rtt, alias)

    def _noop_case_at(self, src_root: Path, small_root: Path, rtt: str, alias: str) -> None:
        src = src_root / DS
        served = self.remote_base("B3-served")
        run_proc(self.rsync(alias, "-a") + [f"{src}/", f"{alias}:{served / DS}/"], self.env)
        cfg = self.remotes_yaml(alias, served)
        if not self.args.quick:  # warm the hash caches: what a user's second pull sees
            run_proc(self.usr_argv(src_root, cfg, "pull", DS, "b", "-y"), self.env)

        def usr_noop() -> Run:
            return run_proc(self.usr_argv(src_root, cfg, "pull", DS, "b"), self.env)

        def rsync_noop() -> Run:
            argv = self.rsync(alias, "-a", "-n", "-c", "--delete")
            return run_proc(argv + [f"{alias}:{served / DS}/", f"{src}/"], self.env)

        def close_master() -> None:  # openssh: every usr run starts without a live master
            run_proc(self.usr_argv(src_root, cfg, "remotes", "close", "b"), self.env)

        openssh = self.args.transport == "openssh"
        ours, peer = self.alternate(usr_noop, rsync_noop, prepare=close_master if openssh else None)
        live: tuple[list[Run], list[Run]] | None = None
        if openssh:  # the master the previous command left alive (ControlPersist), as in a work session
            run_proc(self.usr_argv(src_root, cfg, "pull", DS, "b"), self.env)
            live = self.alternate(usr_noop, rsync_noop)
        ip = self.inprocess(f"B3 no-op pull {rtt}", "pull", src_root, alias, served, always=True)
        # round trips at a smaller part count: constant in file count?
        small_served = self.remote_base("B3-small")
        small = small_root / DS
        run_proc(self.rsync(alias, "-a") + [f"{small}/", f"{alias}:{small_served / DS}/"], self.env)
        ip_small = self.inprocess(
            f"B3 no-op pull small {rtt}", "pull", small_root, alias, small_served, always=True
        )
        assert ip is not None and ip_small is not None
        note = (
            f"exec round trips: {ip['execs']} at {self.sizes.b2_parts} parts, "
            f"{ip_small['execs']} at {self.sizes.b3_small_parts} parts"
        )
        what = "no-op pull (cold master)" if openssh else "no-op pull"
        self.row("B3", what, rtt, ours, peer, "rsync -a -n -c", inproc=ip, note=note)
        if live is not None:
            self.row("B3", "no-op pull (live master)", rtt, *live, "rsync -a -n -c", inproc=ip, note=note)

    def incremental_case(self, src_root: Path, rtts: list[tuple[str, str]]) -> None:
        for rtt, alias in rtts:
            self._incremental_case_at(src_root, rtt, alias)

    def _incremental_case_at(self, src_root: Path, rtt: str, alias: str) -> None:
        src = src_root / DS
        usr_base = self.remote_base("B4-usr")
        rs_base = self.remote_base("B4-rsync")
        cfg = self.remotes_yaml(alias, usr_base)
        for base in (usr_base, rs_base):  # both copies start equal to the source (mtimes kept)
            run_proc(self.rsync(alias, "-a") + [f"{src}/", f"{alias}:{base / DS}/"], self.env)
        parts = sorted((src / "_derived" / "infer").glob("part-*.parquet"))
        counter = iter(range(1, 1_000_000))

        def change() -> None:
            k = next(counter)
            for j, path in enumerate(parts[: self.sizes.b4_changed]):
                write_part(path, self.sizes.part_kb * 1024, seed=9_000_000 + k * 100 + j)
            with (src / ".events.log").open("a") as fh:
                fh.write(json.dumps({"event_version": 1, "action": "bench", "args": {"k": k}}) + "\n")

        def usr_push() -> Run:
            return run_proc(self.usr_argv(src_root, cfg, "push", DS, "b", "-y"), self.env)

        def rsync_push() -> Run:
            return run_proc(self.rsync(alias, "-a") + [f"{src}/", f"{alias}:{rs_base / DS}/"], self.env)

        ours, peer = self.alternate(usr_push, rsync_push, prepare=change)
        change()
        ip = self.inprocess(f"B4 incremental push {rtt}", "push", src_root, alias, usr_base)
        self.row(
            "B4",
            f"incremental push ({self.sizes.b4_changed} parts + 1 event line)",
            rtt,
            ours,
            peer,
            "rsync -a",
            inproc=ip,
        )

    def hashing_case(self) -> None:
        big = self.tmp / "b5.bin"
        with big.open("wb") as fh:
            block = os.urandom(MiB)
            for _ in range(self.sizes.b5_mb):
                fh.write(block)
        py = sys.executable
        ours_code = (
            "import sys; from usrbatch.agent.remote import sha256_file; print(sha256_file(sys.argv[1]))"
        )
        peer_code = (
            "import hashlib, sys\nh = hashlib.sha256()\nwith open(sys.argv[1], 'rb') as f:\n"
            "    while b := f.read(1 << 20):\n        h.update(b)\nprint(h.hexdigest())"
        )
        ours, peer = self.alternate(
            lambda: run_proc([py, "-c", ours_code, str(big)], self.env),
            lambda: run_proc([py, "-c", peer_code, str(big)], self.env),
        )
        self.row(
            "B5", f"sha256 of one {self.sizes.b5_mb} MiB file", "local", ours, peer, "hashlib (1 MiB reads)"
        )
        big.unlink()

    def rss_case(self, src_root: Path, rtts: list[tuple[str, str]]) -> None:
        for rtt, alias in rtts:
            self._rss_case_at(src_root, rtt, alias)

    def _rss_case_at(self, src_root: Path, rtt: str, alias: str) -> None:
        def usr_push() -> Run:
            base = self.remote_base("B6-usr")
            return run_proc(
                self.usr_argv(src_root, self.remotes_yaml(alias, base), "push", DS, "b", "-y"), self.env
            )

        def rsync_push() -> Run:
            base = self.remote_base("B6-rsync")
            return run_proc(
                self.rsync(alias, "-a") + [f"{src_root / DS}/", f"{alias}:{base / DS}/"], self.env
            )

        saved = self.sizes
        self.sizes = dataclasses.replace(saved, runs=1)
        try:
            ours, peer = self.alternate(usr_push, rsync_push)
        finally:
            self.sizes = saved
        self.row(
            "B6",
            f"push of a {self.sizes.b6_mb} MiB dataset",
            rtt,
            ours,
            peer,
            "rsync -a",
            peer_rss_mb=max(r.maxrss_kb for r in peer) / 1024,
        )


# -- the table -------------------------------------------------------------------------------


def machine() -> str:
    def version(argv: list[str]) -> str:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return (out.stdout or out.stderr).splitlines()[0].strip()
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "?"

    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import paramiko

    return (
        f"{os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}, Python {platform.python_version()}, "
        f"paramiko {paramiko.__version__}, {version(['ssh', '-V'])}, {version(['rsync', '--version'])}, "
        f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} at the end"
    )


def met(row: dict) -> str:
    if row["case"] == "B6":
        return "yes" if row["usr_rss_mb"] < 150 else "**no**"
    need = 2.0 if "live master" in row["what"] else TARGETS[row["case"]][1]
    return "yes" if row["ratio"] >= need else "**no**"


def table(bench: Bench, mode: str, command: str, elapsed: float) -> str:
    s = bench.sizes
    lines = [
        f"Produced by `{command}` on {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC "
        f"({mode} sizes, {s.runs} run(s) per case, medians; took {elapsed:.0f} s).",
        f"Machine: {machine()}. Transport: {bench.args.transport}.",
        "",
        "| case | what | RTT | usrbatch (whole process) | peer | peer time | ratio (peer/ours) | target | met | "
        "in-process: time, execs/connections |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in bench.rows:
        target = "< 150 MiB peak RSS" if r["case"] == "B6" else TARGETS[r["case"]][0]
        if "live master" in r["what"]:
            target = "≥ 2× rsync -a -n -c (live master)"
        ours = f"{r['usr_s']:.3f} s, peak {r['usr_rss_mb']:.0f} MiB"
        peer_t = f"{r['peer_s']:.3f} s"
        if "peer_rss_mb" in r:
            peer_t += f", peak {r['peer_rss_mb']:.0f} MiB"
        ip = r.get("inproc")
        ip_text = f"{ip['seconds']:.3f} s, {ip['execs']}/{ip['connects']}" if ip else "—"
        if r.get("note"):
            ip_text += f"; {r['note']}"
        lines.append(
            f"| {r['case']} | {r['what']} | {r['rtt']} | {ours} | {r['peer']} | {peer_t} | "
            f"{r['ratio']:.2f}× | {target} | {met(r)} | {ip_text} |"
        )
    lines.append(
        "| B7 | `usrbatch submit-loop` 10 iterations × 4 steps on SGE and Slurm | — | measured by "
        "`bench/bench_submit.py` (the B7 note before this block) | — | — | — | < 5 s; `status` = 1 scheduler call | — | — |"
    )
    sizes = (
        f"Sizes: B1 {s.b1_mb} MiB records.parquet; B2 {s.b2_mb} MiB records + {s.b2_parts} parts × "
        f"{s.part_kb} KiB; B3 B2's dataset (round trips also at {s.b3_small_parts} parts); "
        f"B4 {s.b4_changed} parts rewritten + 1 event line in B2's dataset; B5 {s.b5_mb} MiB; "
        f"B6 {s.b6_mb} MiB records.parquet."
    )
    lines += ["", sizes]
    missed = [r for r in bench.rows if met(r) != "yes" and r.get("inproc")]
    if missed:
        lines += ["", "Profiles of the in-process runs where a target is missed (cProfile, cumulative):", ""]
        for r in missed:
            key = next(
                (
                    k
                    for k in bench.profiles
                    if k.startswith(f"{r['case']} ") and k.endswith(r["rtt"]) and (r["what"].split()[0] in k)
                ),
                None,
            )
            if key is None:
                continue
            body = [ln for ln in bench.profiles[key].splitlines() if ln.strip()]
            start = next((i for i, ln in enumerate(body) if ln.lstrip().startswith("ncalls")), 0)
            lines += [
                f"<details><summary>{key}</summary>",
                "",
                "```",
                *body[start : start + 13],
                "```",
                "",
                "</details>",
                "",
            ]
    return "\n".join(lines) + "\n"


def write_doc(text: str) -> None:
    doc = DOC.read_text()
    block = f"{START}\n{text}{END}"
    if START in doc and END in doc:
        head, rest = doc.split(START, 1)
        doc = head + block + rest.split(END, 1)[1]
    else:
        doc = doc.rstrip() + "\n\n## B1–B7: whole processes (`bench/bench_b.py`)\n\n" + block + "\n"
    DOC.write_text(doc)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="smoke sizes, 1 run")
    mode.add_argument("--full", action="store_true", help="the issue's sizes (512 MiB ... 2 GiB)")
    ap.add_argument("--runs", type=int, default=None, help="runs per case (default: 1 quick, 3, 5 full)")
    ap.add_argument("--rtt-ms", type=float, default=20.0, help="round trip added by the proxy (0: none)")
    ap.add_argument(
        "--transport",
        choices=("paramiko", "openssh"),
        default="openssh" if shutil.which("ssh") else "paramiko",
        help="the remote's `transport:` (default: as usrbatch chooses, openssh where ssh exists)",
    )
    ap.add_argument("--only", default="", help="comma-separated cases, e.g. B1,B3")
    ap.add_argument("--out", type=Path, default=None, help="also write the table (markdown) here")
    ap.add_argument("--json", type=Path, default=None, help="write the rows as JSON here")
    ap.add_argument("--write-doc", action="store_true", help="replace the table in docs/benchmarks.md")
    args = ap.parse_args()
    for tool in ("rsync", "ssh"):
        if not shutil.which(tool):
            print(f"{tool} not found: run scripts/services-install ssh", file=sys.stderr)
            return 2
    name, sizes = ("quick", QUICK) if args.quick else ("full", FULL) if args.full else ("reduced", REDUCED)
    if args.runs:
        sizes = dataclasses.replace(sizes, runs=args.runs)
    only = {c.strip().upper() for c in args.only.split(",") if c.strip()}

    def want(case: str) -> bool:
        return not only or case in only

    t_start = time.perf_counter()
    # usrbatch runs as an installed package does: from bytecode (pip compiles at install). Without
    # this, an environment with PYTHONDONTWRITEBYTECODE=1 compiles every usrbatch module in every
    # measured process (~0.1 s for the agent alone: most of B5's gap before 2026-11-26 16:30 UTC).
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "usrbatch")], check=True)
    services = load_services()
    with tempfile.TemporaryDirectory(prefix="usrbatch-bench-b-") as tmp_s:
        tmp = Path(tmp_s)
        server, sshd = services.start_sshd(tmp / "sshd")
        proxy = None
        bench = Bench(args, sizes, tmp, server)
        try:
            if args.rtt_ms > 0:
                proxy = DelayProxy(server.host, server.port, one_way_s=args.rtt_ms / 2000)
            bench.write_ssh(proxy.port if proxy else None)
            rtts = [("loopback", "bench-lo")]
            if proxy:
                rtts.append((f"~{args.rtt_ms:.0f} ms", "bench-rtt"))
            print(f"sizes ({name}): {sizes}; sshd {server.host}:{server.port}", flush=True)
            if want("B1"):
                root = tmp / "b1"
                make_dataset(root, records_mb=sizes.b1_mb, parts=0, part_kb=sizes.part_kb)
                bench.transfer_case("B1", root, rtts)
                shutil.rmtree(root)
            if want("B2") or want("B3") or want("B4"):
                root = tmp / "b2"
                make_dataset(root, records_mb=sizes.b2_mb, parts=sizes.b2_parts, part_kb=sizes.part_kb)
                if want("B2"):
                    bench.transfer_case("B2", root, rtts)
                if want("B3"):
                    small = tmp / "b3-small"
                    make_dataset(
                        small, records_mb=sizes.b2_mb, parts=sizes.b3_small_parts, part_kb=sizes.part_kb
                    )
                    bench.noop_case(root, small, rtts)
                if want("B4"):
                    bench.incremental_case(root, rtts)
            if want("B5"):
                bench.hashing_case()
            if want("B6"):
                root = tmp / "b6"
                make_dataset(root, records_mb=sizes.b6_mb, parts=0, part_kb=sizes.part_kb)
                bench.rss_case(root, rtts)
            # remove bulky remote copies as we go would skew nothing; they go with the temp dir
        finally:
            bench.close_masters(["bench-lo", "bench-rtt"] if proxy else ["bench-lo"])
            if proxy:
                proxy.close()
            services.stop_sshd(sshd)
            cache = Path.home() / ".cache" / "usrbatch" / "hash-cache"
            for d in bench.remote_dirs:  # the agent's remote hash-cache files of our datasets
                import hashlib

                key = hashlib.sha256(os.path.abspath(d).encode()).hexdigest()[:32]
                (cache / f"{key}.json").unlink(missing_ok=True)
        command = "uv run python bench/bench_b.py" + (
            " --quick" if args.quick else " --full" if args.full else ""
        )
        command += f" --transport {args.transport}"
        text = table(bench, name, command, time.perf_counter() - t_start)
    print(text, flush=True)
    if args.out:
        args.out.write_text(text)
    if args.json:
        args.json.write_text(json.dumps(bench.rows, indent=1, default=str))
    if args.write_doc:
        write_doc(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
