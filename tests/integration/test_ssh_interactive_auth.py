"""Interactive SSH authentication through the real `usr` CLI on a pseudo-terminal.

Two private sshd instances authenticate the user usrbatch-auth-test through PAM: one wants 2FA
(`AuthenticationMethods publickey,keyboard-interactive`, the PAM prompt `Password: `), the other
a password. `usr` runs on a pty whose slave is its controlling terminal, so stdin IS a TTY and
getpass talks to it like to a user; the test reads each prompt from the master and types the
answer. The password is random per run and must never show up: not echoed, not printed, not in
the JSON log.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sync"))
from builders import make_dataset  # noqa: E402

try:
    from .services import (
        AUTH_TEST_USER,
        SshdServer,
        auth_test_lock,
        auth_test_unavailable,
        require_service,
        set_auth_test_password,
        start_sshd,
        stop_sshd,
    )
except ImportError:  # pytest "prepend" import mode
    from services import (  # type: ignore[no-redef]
        AUTH_TEST_USER,
        SshdServer,
        auth_test_lock,
        auth_test_unavailable,
        require_service,
        set_auth_test_password,
        start_sshd,
        stop_sshd,
    )

USR = Path(sys.executable).with_name("usr")
PAM_PROMPT = "Password: "  # pam_unix, through keyboard-interactive
PASSWORD_PROMPT = f"{AUTH_TEST_USER}@127.0.0.1's password: "  # usrbatch's own, as OpenSSH's
# Runs in the child: make the pty slave (stdin) the controlling terminal, so getpass opens it as
# /dev/tty, then become `usr`.
CTTY_EXEC = "import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); os.execv(sys.argv[1], sys.argv[1:])"


@pytest.fixture(scope="module")
def password() -> Iterator[str]:
    """A random password for usrbatch-auth-test, set for this module only (then locked again)."""
    why = auth_test_unavailable()
    require_service("sshd-auth", why is None, f"the interactive-auth sshd cannot run: {why}")
    with auth_test_lock():
        value = "Pw-" + secrets.token_urlsafe(18)
        set_auth_test_password(value)
        try:
            yield value
        finally:
            set_auth_test_password(None)


def _server(auth: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshdServer]:
    server, proc = start_sshd(tmp_path_factory.mktemp(f"sshd-{auth}"), auth=auth)
    try:
        yield server
    finally:
        stop_sshd(proc)
        if server.user_dir is not None:
            shutil.rmtree(server.user_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def sshd_2fa(password: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshdServer]:
    yield from _server("2fa", tmp_path_factory)


@pytest.fixture(scope="module")
def sshd_password(password: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshdServer]:
    yield from _server("password", tmp_path_factory)


def _remotes(tmp_path: Path, server: SshdServer, *, batch_mode: bool) -> Path:
    assert server.user_dir is not None
    cfg = tmp_path / "remotes.yaml"
    cfg.write_text(
        "remotes:\n  scc:\n    type: ssh\n"
        f"    host: {server.alias}\n    user: {server.user}\n    base_dir: '{server.user_dir}'\n"
        f"    batch_mode: {'true' if batch_mode else 'false'}\n"
    )
    return cfg


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"SSH_AUTH_SOCK", "USRBATCH_AUDIT_LOG"}}
    env.update(XDG_CACHE_HOME=str(tmp_path / "cache"), TERM="dumb")
    return env


def run_on_pty(
    args: list[str], env: dict[str, str], answers: dict[str, str], timeout: float = 60.0
) -> tuple[int, str, list[str]]:
    """Run `usr args` with a pty as its terminal; type answers[prompt] each time a prompt shows.
    Returns (exit code, everything the terminal showed, the prompts answered in order)."""
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", CTTY_EXEC, str(USR), *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            start_new_session=True,
        )
    finally:
        os.close(slave)
    out, seen, answered = b"", 0, []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: every slave fd is closed, the child is gone
                    break
                if not chunk:
                    break
                out += chunk
            text = out.decode(errors="replace")
            for prompt, reply in answers.items():
                at = text.find(prompt, seen)
                if at >= 0:
                    seen = at + len(prompt)
                    answered.append(prompt)
                    os.write(master, reply.encode() + b"\n")
        else:
            pytest.fail(f"usr {' '.join(args)} did not finish within {timeout}s; terminal so far:\n{out!r}")
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return code, out.decode(errors="replace").replace("\r\n", "\n"), answered


def _doctor(cfg: Path, server: SshdServer) -> list[str]:
    return [
        "--remotes-config",
        str(cfg),
        "remotes",
        "doctor",
        "--remote",
        "scc",
        "--ssh-config",
        str(server.ssh_config),
    ]


def test_2fa_key_then_pam_prompt(sshd_2fa: SshdServer, password: str, tmp_path: Path) -> None:
    cfg = _remotes(tmp_path, sshd_2fa, batch_mode=False)
    code, out, answered = run_on_pty(_doctor(cfg, sshd_2fa), _env(tmp_path), {PAM_PROMPT: password})
    assert code == 0, out
    assert answered == [PAM_PROMPT]
    assert f"auth: ok ({sshd_2fa.client_key} + keyboard-interactive)" in out.splitlines()
    assert out.rstrip().endswith("Doctor checks passed.")
    assert password not in out  # getpass turned echo off
    log = sshd_2fa.log.read_text()
    assert f"Accepted keyboard-interactive/pam for {AUTH_TEST_USER}" in log
    assert f"Partial publickey for {AUTH_TEST_USER}" in log


def test_2fa_push_keeps_password_out_of_the_json_log(
    sshd_2fa: SshdServer, password: str, tmp_path: Path
) -> None:
    cfg = _remotes(tmp_path, sshd_2fa, batch_mode=False)
    root, log = tmp_path / "local", tmp_path / "audit.jsonl"
    make_dataset(root, "densegen/demo")
    env = _env(tmp_path) | {"USRBATCH_SSH_CONFIG": str(sshd_2fa.ssh_config)}
    args = ["--root", str(root), "--remotes-config", str(cfg), "--log-json", str(log)]
    code, out, answered = run_on_pty(
        [*args, "push", "densegen/demo", "scc", "-y"], env, {PAM_PROMPT: password}
    )
    assert code == 0, out
    assert answered and set(answered) == {PAM_PROMPT}
    assert (sshd_2fa.user_dir / "densegen" / "demo" / "records.parquet").is_file()  # type: ignore[operator]
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert any(e.get("event") == "sync.verified" and e.get("context") == "post-push" for e in events), events
    assert password not in log.read_text() and password not in out


def test_2fa_wrong_answer_fails_with_what_was_tried(
    sshd_2fa: SshdServer, password: str, tmp_path: Path
) -> None:
    cfg = _remotes(tmp_path, sshd_2fa, batch_mode=False)
    wrong = "Wrong-" + secrets.token_urlsafe(12)
    code, out, answered = run_on_pty(_doctor(cfg, sshd_2fa), _env(tmp_path), {PAM_PROMPT: wrong})
    assert code == 2, out
    assert answered == [PAM_PROMPT]
    key = sshd_2fa.client_key
    assert (
        f"ERROR: SSH authentication failed for {AUTH_TEST_USER}@{sshd_2fa.alias} (tried: {key}, "
        f"keyboard-interactive; {key} was accepted but the server also requires: keyboard-interactive)."
    ) in out.splitlines()
    assert "Traceback" not in out and wrong not in out and password not in out


def test_2fa_with_batch_mode_is_refused_with_the_hint(sshd_2fa: SshdServer, tmp_path: Path) -> None:
    cfg = _remotes(tmp_path, sshd_2fa, batch_mode=True)
    # On a terminal, too: batch_mode alone keeps usr from prompting.
    code, out, answered = run_on_pty(_doctor(cfg, sshd_2fa), _env(tmp_path), {PAM_PROMPT: "unused"})
    assert code == 2, out
    assert answered == []
    key = sshd_2fa.client_key
    lines = out.splitlines()
    assert (
        f"ERROR: SSH authentication failed for {AUTH_TEST_USER}@{sshd_2fa.alias} (tried: {key}; "
        f"{key} was accepted but the server also requires: keyboard-interactive)."
    ) in lines
    hint = next(line for line in lines if line.startswith("Hint:"))
    assert "set batch_mode: false and run from a terminal" in hint


def test_2fa_without_a_terminal_does_not_prompt(sshd_2fa: SshdServer, tmp_path: Path) -> None:
    cfg = _remotes(tmp_path, sshd_2fa, batch_mode=False)
    res = subprocess.run(
        [str(USR), *_doctor(cfg, sshd_2fa)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        timeout=60,
    )
    assert res.returncode == 2, res.stdout + res.stderr
    assert PAM_PROMPT not in res.stdout + res.stderr
    key = sshd_2fa.client_key
    lines = res.stdout.splitlines()
    assert (
        f"ERROR: SSH authentication failed for {AUTH_TEST_USER}@{sshd_2fa.alias} (tried: {key}; "
        f"{key} was accepted but the server also requires: keyboard-interactive)."
    ) in lines
    hint = next(line for line in lines if line.startswith("Hint:"))
    assert hint.endswith("Password and 2FA prompts need a terminal: stdin is not a TTY.")


def test_password_login(sshd_password: SshdServer, password: str, tmp_path: Path) -> None:
    cfg = _remotes(tmp_path, sshd_password, batch_mode=False)
    code, out, answered = run_on_pty(_doctor(cfg, sshd_password), _env(tmp_path), {PASSWORD_PROMPT: password})
    assert code == 0, out
    assert answered == [PASSWORD_PROMPT]
    assert "auth: ok (password)" in out.splitlines()
    assert out.rstrip().endswith("Doctor checks passed.")
    assert password not in out
    assert f"Accepted password for {AUTH_TEST_USER}" in sshd_password.log.read_text()


def test_wrong_password_fails_with_what_was_tried(
    sshd_password: SshdServer, password: str, tmp_path: Path
) -> None:
    cfg = _remotes(tmp_path, sshd_password, batch_mode=False)
    wrong = "Wrong-" + secrets.token_urlsafe(12)
    code, out, answered = run_on_pty(_doctor(cfg, sshd_password), _env(tmp_path), {PASSWORD_PROMPT: wrong})
    assert code == 2, out
    assert answered == [PASSWORD_PROMPT]
    assert (
        f"ERROR: SSH authentication failed for {AUTH_TEST_USER}@{sshd_password.alias} "
        f"(tried: {sshd_password.client_key}, password)."
    ) in out.splitlines()
    assert "Traceback" not in out and wrong not in out and password not in out


def _openssh_setup(tmp_path: Path, server: SshdServer, *, batch_mode: bool) -> tuple[Path, Path]:
    """remotes.yaml naming `transport: openssh`, and an ssh_config that lets OpenSSH answer the
    keyboard-interactive factor (the server's own file turns it off for the batch tests)."""
    cfg = _remotes(tmp_path, server, batch_mode=batch_mode)
    cfg.write_text(cfg.read_text() + "    transport: openssh\n    control_persist: 10m\n")
    ssh_cfg = tmp_path / "ssh_config"
    ssh_cfg.write_text(
        server.ssh_config.read_text().replace(
            "KbdInteractiveAuthentication no", "KbdInteractiveAuthentication yes"
        )
    )
    ssh_cfg.chmod(0o600)
    return cfg, ssh_cfg


def _logins(server: SshdServer) -> int:
    return server.log.read_text().count(f"Accepted keyboard-interactive/pam for {AUTH_TEST_USER}")


def test_openssh_warm_auth_once_then_commands_reuse_the_login(
    sshd_2fa: SshdServer, password: str, tmp_path: Path, control_dir: Path
) -> None:
    """One 2FA prompt (warm-auth, on a terminal), then push, diff, pull and status without a
    terminal reuse the ControlMaster: one login in the sshd log, no prompt anywhere; after
    `remotes close` a batch command fails with the warm-auth hint instead of prompting."""
    cfg, ssh_cfg = _openssh_setup(tmp_path, sshd_2fa, batch_mode=False)
    env = _env(tmp_path) | {"USRBATCH_SSH_CONFIG": str(ssh_cfg), "USRBATCH_CONTROL_DIR": str(control_dir)}
    before = _logins(sshd_2fa)
    code, out, answered = run_on_pty(
        ["--remotes-config", str(cfg), "remotes", "warm-auth", "scc"], env, {PAM_PROMPT: password}
    )
    assert code == 0, out
    assert answered == [PAM_PROMPT]
    assert "Bootstrap     : started" in out and "Control socket: live (pid " in out
    assert password not in out
    root = tmp_path / "local"
    make_dataset(root, "densegen/demo")
    args = ["--root", str(root), "--remotes-config", str(cfg)]
    commands = [
        [*args, "push", "densegen/demo", "scc", "-y"],
        [*args, "diff", "densegen/demo", "scc"],
        [*args, "pull", "densegen/demo", "scc", "-y"],
        ["--remotes-config", str(cfg), "remotes", "status", "scc", "--json"],
    ]
    outputs = []
    for argv in commands:
        res = subprocess.run(
            [str(USR), *argv], stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=120
        )
        assert res.returncode == 0, res.stdout + res.stderr
        assert PAM_PROMPT not in res.stdout + res.stderr
        outputs.append(res.stdout)
    assert (sshd_2fa.user_dir / "densegen" / "demo" / "records.parquet").is_file()  # type: ignore[operator]
    status = json.loads(outputs[-1])
    assert status["socket_live"] is True and status["transport"] == "openssh"
    assert status["control_persist_s"] == 600 and status["recommendation"] == "ready for sync"
    assert _logins(sshd_2fa) - before == 1  # N commands, one login, one prompt

    code, out, _ = run_on_pty(["--remotes-config", str(cfg), "remotes", "close", "scc"], env, {})
    assert code == 0 and "Closed the SSH login for remote 'scc'." in out
    res = subprocess.run(
        [str(USR), *commands[1]],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert res.returncode == 2, res.stdout + res.stderr
    assert PAM_PROMPT not in res.stdout + res.stderr
    assert f"ERROR: SSH authentication failed for {AUTH_TEST_USER}@{sshd_2fa.alias}" in res.stdout
    assert "usr remotes warm-auth scc" in res.stdout
    assert _logins(sshd_2fa) - before == 1


def test_openssh_warm_auth_without_a_terminal_never_prompts(
    sshd_2fa: SshdServer, tmp_path: Path, control_dir: Path
) -> None:
    cfg, ssh_cfg = _openssh_setup(tmp_path, sshd_2fa, batch_mode=False)
    env = _env(tmp_path) | {"USRBATCH_CONTROL_DIR": str(control_dir)}
    res = subprocess.run(
        [str(USR), "--remotes-config", str(cfg), "remotes", "warm-auth", "scc", "--ssh-config", str(ssh_cfg)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert res.returncode == 2, res.stdout + res.stderr
    assert PAM_PROMPT not in res.stdout + res.stderr
    assert res.stdout.startswith(f"ERROR: SSH authentication failed for {AUTH_TEST_USER}@{sshd_2fa.alias}")
    assert "Traceback" not in res.stdout + res.stderr
