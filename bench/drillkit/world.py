"""The world a drill runs in: a private sshd, a local datasets root and a remote base_dir on this
machine, a remotes.yaml naming them, and the `usr` CLI run in-process or as a child process.

Nothing here is faked: commands are the real `usr` CLI (click group, error rendering and all), the
remote is reached through the real sshd, and the datasets are built by `usr init/import/attach`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1]
REPO = BENCH.parent
DS = "densegen/drill"
NAMESPACE = "infer"
REMOTE = "hpc"  # ssh remote straight to the private sshd
CUT_REMOTE = "cut"  # ssh remote through the cuttable TCP proxy


def load_services():
    """tests/integration/services.py and tcp_proxy.py as plain modules (no pytest fixtures)."""
    here = REPO / "tests" / "integration"
    if str(here) not in sys.path:
        sys.path.insert(0, str(here))
    import services  # type: ignore[import-not-found]
    import tcp_proxy  # type: ignore[import-not-found]

    return services, tcp_proxy


@dataclass(frozen=True)
class CliRun:
    """One `usr`/`usrbatch` command: exit code, everything it printed, and a traceback if it crashed."""

    argv: tuple[str, ...]
    code: int
    out: str
    crash: str | None = None  # the uncaught exception's traceback (in-process) or stderr's

    @property
    def ok(self) -> bool:
        return self.code == 0 and self.crash is None

    def brief(self) -> str:
        text = (self.crash or self.out).strip().splitlines()
        return f"exit {self.code}: " + (" | ".join(text[-3:]) if text else "(no output)")


def _looks_like_traceback(text: str) -> bool:
    return "Traceback (most recent call last)" in text


@dataclass
class World:
    """Directories, the sshd and the config files of one drill session. Use `world()` to make one."""

    tmp: Path
    server: object  # services.SshdServer
    proxy: object  # tcp_proxy.TcpProxy in front of the sshd
    ssh_config: Path
    remotes: Path
    audit_log: Path
    env: dict[str, str] = field(default_factory=dict)
    counter: int = 0
    remote_bases: list[Path] = field(default_factory=list)

    def remote_cache_files(self) -> list[Path]:
        """The hash-cache files written for our datasets outside the world's XDG_CACHE_HOME: sshd
        sessions and scheduler jobs get no XDG_CACHE_HOME, so those live under ~/.cache."""
        out = []
        for base in self.remote_bases:
            key = hashlib.sha256(os.path.abspath(base / DS).encode("utf-8", "surrogateescape")).hexdigest()
            out.append(Path.home() / ".cache" / "usrbatch" / "hash-cache" / f"{key[:32]}.json")
        return out

    # -- per-run sides ------------------------------------------------------------------------

    def fresh(self, label: str) -> tuple[Path, Path]:
        """A new (local root, remote base) pair for one run, each with the shared registry.yaml;
        the remote base becomes what remotes `hpc` and `cut` point at."""
        self.counter += 1
        run = self.tmp / "runs" / f"{self.counter:04d}-{label}"
        local, remote = run / "local", run / "remote base"
        local.mkdir(parents=True)
        remote.mkdir(parents=True)
        for root in (local, remote):
            shutil.copy2(self.tmp / "template" / "registry.yaml", root / "registry.yaml")
        self.point_remotes(remote)
        self.remote_bases += [local, remote]
        return local, remote

    def point_remotes(self, base: Path, extra: str = "") -> None:
        user = self.server.user
        self.remotes.write_text(
            "remotes:\n"
            f"  {REMOTE}:\n    type: ssh\n    host: {self.server.alias}\n    user: {user}\n"
            f"    base_dir: '{base}'\n"
            f"  {CUT_REMOTE}:\n    type: ssh\n    host: {CUT_REMOTE}\n    user: {user}\n"
            f"    base_dir: '{base}'\n"
            f"  shared:\n    type: local\n    base_dir: '{base}'\n" + extra
        )
        self.remotes.chmod(0o600)

    # -- running commands ---------------------------------------------------------------------

    def usr(self, root: Path, *args: str, env: Mapping[str, str] | None = None) -> CliRun:
        """`usr --root ROOT --remotes-config ... ARGS` in this process (real click group); `env`
        adds to the world's environment for this command only."""
        from usrbatch.cli.usr_main import usr

        argv = ["--root", str(root), "--remotes-config", str(self.remotes), *args]
        return self._in_process(usr, argv, "usr", env)

    def usrbatch(self, *args: str, env: Mapping[str, str] | None = None) -> CliRun:
        from usrbatch.cli.usrbatch_main import usrbatch

        return self._in_process(usrbatch, list(args), "usrbatch", env)

    def _in_process(self, group, argv: list[str], name: str, env: Mapping[str, str] | None = None) -> CliRun:
        from usrbatch import auditlog
        from usrbatch.cli.common import run_cli

        buf = io.StringIO()
        crash = None
        code = -1
        with (
            _patched_env({**self.env, **(env or {})}),
            contextlib.redirect_stdout(buf),
            contextlib.redirect_stderr(buf),
            _stdin_empty(),
        ):
            try:
                code = run_cli(group, argv)
            except SystemExit as exc:  # click's own exits
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:  # noqa: BLE001 - a crash is a drill finding, never the harness's
                crash = traceback.format_exc()
            finally:
                auditlog.configure(None)
        out = buf.getvalue()
        if crash is None and _looks_like_traceback(out):
            crash = out
        return CliRun((name, *argv), code, out, crash)

    def usr_argv(self, root: Path, *args: str) -> list[str]:
        """argv of a child `usr` process (the venv's console script)."""
        exe = Path(sys.executable).parent / "usr"
        return [str(exe), "--root", str(root), "--remotes-config", str(self.remotes), *args]

    def child_env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.env)
        env.update(extra or {})
        return env

    def usr_child(self, root: Path, *args: str, timeout: float = 300, extra_env=None) -> CliRun:
        """`usr ...` as a child process (for kills and races)."""
        argv = self.usr_argv(root, *args)
        proc = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.child_env(extra_env),
        )
        crash = proc.stderr if _looks_like_traceback(proc.stderr + proc.stdout) else None
        return CliRun(tuple(argv), proc.returncode, proc.stdout + proc.stderr, crash)


@contextlib.contextmanager
def _patched_env(values: Mapping[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _stdin_empty() -> Iterator[None]:
    saved = sys.stdin
    sys.stdin = io.StringIO("")
    try:
        yield
    finally:
        sys.stdin = saved


def _write_ssh_config(tmp: Path, server, proxy_port: int) -> Path:
    """The sshd's own config (Host usrtest) plus `Host cut` through the proxy, with its own
    known_hosts line for [127.0.0.1]:<proxy port> (the same host key)."""
    kind, blob = server.host_key_pub.read_text().split()[:2]
    known = tmp / "known_hosts_cut"
    known.write_text(f"[127.0.0.1]:{proxy_port} {kind} {blob}\n")
    cfg = tmp / "ssh_config"
    cfg.write_text(
        server.ssh_config.read_text()
        + "\n".join(
            [
                f"Host {CUT_REMOTE}",
                "    HostName 127.0.0.1",
                f"    Port {proxy_port}",
                f"    User {server.user}",
                f"    IdentityFile {server.client_key}",
                "    IdentitiesOnly yes",
                f"    UserKnownHostsFile {known}",
                "    GlobalKnownHostsFile /dev/null",
                "    StrictHostKeyChecking yes",
                "    ConnectTimeout 10",
                "",
            ]
        )
    )
    cfg.chmod(0o600)
    return cfg


@contextlib.contextmanager
def world(server=None, *, keep: bool = False, small: bool = False) -> Iterator[World]:
    """A drill world; starts (and stops) a private sshd unless `server` is given. `small`: small
    datasets (see datasets.build_templates)."""
    services, tcp_proxy = load_services()
    tmp = Path(tempfile.mkdtemp(prefix="usrbatch-drills-"))
    proc = None
    try:
        if server is None:
            server, proc = services.start_sshd(tmp / "sshd")
        with tcp_proxy.TcpProxy(server.host, server.port) as proxy:
            w = World(
                tmp=tmp,
                server=server,
                proxy=proxy,
                ssh_config=_write_ssh_config(tmp, server, proxy.port),
                remotes=tmp / "remotes.yaml",
                audit_log=tmp / "audit.jsonl",
            )
            w.env = {
                "USRBATCH_SSH_CONFIG": str(w.ssh_config),
                "XDG_CACHE_HOME": str(tmp / "xdg-cache"),
                "USRBATCH_AUDIT_LOG": str(w.audit_log),
                "USRBATCH_SSH_BACKOFF": "0.05",
                "USR_REMOTES_PATH": str(w.remotes),
            }
            from . import datasets

            try:
                datasets.build_templates(w, small=small)
                yield w
            finally:
                for path in w.remote_cache_files():
                    path.unlink(missing_ok=True)
    finally:
        if proc is not None:
            services.stop_sshd(proc)
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
