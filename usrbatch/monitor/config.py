"""The watch config (one YAML file, mode 0600): targets, their filters and secrets, and timings.

    targets:
      team-slack: {type: slack, url_env: USRBATCH_SLACK_URL, events: [job.failed, loop.completed]}
      ops-hook:   {type: webhook, url: https://ops.example.org/hook, token_file: ~/.config/usrbatch/hook-token}
      lab-discord: {type: discord, url_file: ~/.config/usrbatch/discord-url, loops: ["densegen-*"]}
      me:         {type: email, host: smtp.example.org, port: 587, from: me@example.org, to: [me@example.org],
                   username: me, password_env: SMTP_PASSWORD}
    watch: {poll_s: 5, status_interval_s: 60, heartbeat_s: 1800, pending_after_s: 3600, stall_after_s: 21600}

Secrets (Slack/Discord URLs, webhook tokens, SMTP passwords) come from a file or an environment
variable named here, never inline, and never appear in logs, errors or the spool.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import os
import re
import shlex
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from usrbatch.errors import UsrError
from usrbatch.monitor.alerts import EVENTS, WATCH_HEARTBEAT
from usrbatch.monitor.status_alerts import Thresholds
from usrbatch.redaction import redact_text

TARGET_TYPES = ("webhook", "slack", "discord", "email")
_TARGET_KEYS = {
    "webhook": ("url", "url_file", "url_env", "token_file", "token_env"),
    "slack": ("url_file", "url_env"),
    "discord": ("url_file", "url_env"),
    "email": ("host", "port", "from", "to", "username", "password_file", "password_env"),
}
_COMMON_KEYS = ("type", "events", "loops", "ca_file", "timeout_s")
_WATCH_KEYS = (
    "group_window_s",
    "poll_s",
    "status_interval_s",
    "heartbeat_s",
    "pending_after_s",
    "stall_after_s",
    "retry_max_s",
    "state_dir",
)


class WatchConfigError(UsrError):
    """The watch config is missing, unsafe or invalid."""


@dataclass(frozen=True)
class Target:
    """One place alerts go. `secret` is the resolved secret (URL, token or password), kept out of repr."""

    name: str
    type: str
    events: tuple[str, ...]  # empty: every event except the heartbeat
    loops: tuple[str, ...]  # glob patterns; empty: every loop
    url: str = field(default="", repr=False)
    secret: str = field(default="", repr=False)
    ca_file: Path | None = None
    timeout_s: float = 20.0
    host: str = ""
    port: int = 587
    sender: str = ""
    recipients: tuple[str, ...] = ()
    username: str = ""

    def wants(self, event: str, loop_id: str) -> bool:
        """The filter: does this target take `event` of `loop_id`?"""
        if self.events:
            if event not in self.events:
                return False
        elif event == WATCH_HEARTBEAT:
            return False
        return not self.loops or not loop_id or any(fnmatch.fnmatchcase(loop_id, p) for p in self.loops)

    def secrets(self) -> list[str]:
        """Values that must never be written anywhere (scrubbed from errors)."""
        # Webhook URLs often carry their token in the path or query: never echo any of them.
        return [v for v in (self.secret, self.url) if v]


@dataclass(frozen=True)
class WatchSettings:
    poll_s: float = 5.0
    status_interval_s: float = 60.0
    heartbeat_s: float = 1800.0
    retry_max_s: float = 3600.0
    group_window_s: float = (
        300.0  # after a loop's problem message, later problems wait this long and go as one summary
    )
    thresholds: Thresholds = Thresholds()
    state_dir: Path | None = None


@dataclass(frozen=True)
class WatchConfig:
    path: Path | None
    targets: tuple[Target, ...]
    settings: WatchSettings


def _err(path: Path, where: str, message: str, hint: str | None = None) -> WatchConfigError:
    return WatchConfigError(redact_text(f"{path}: {where}: {message}"), hint=hint)


def check_private(path: Path) -> None:
    """Refuse a config others can read or write (it names where secrets live), with the chmod fix."""
    st = os.stat(path)
    if st.st_mode & 0o077:
        quoted = shlex.quote(str(path))
        raise WatchConfigError(
            f"Refusing watch config {path}: mode {stat.S_IMODE(st.st_mode):04o} lets group/others access it",
            hint=f"Fix it with: chmod 600 {quoted}",
        )
    if st.st_uid not in (os.getuid(), 0):
        raise WatchConfigError(f"Refusing watch config {path}: owned by uid {st.st_uid}, not by you")


def _read_secret(path: Path, where: str, raw: dict, stem: str) -> str:
    file_key, env_key = f"{stem}_file", f"{stem}_env"
    if file_key in raw and env_key in raw:
        raise _err(path, where, f"give {file_key} or {env_key}, not both")
    if file_key in raw:
        secret_path = Path(str(raw[file_key])).expanduser()
        if not secret_path.is_absolute():
            secret_path = path.parent / secret_path
        try:
            st = os.stat(secret_path)
        except OSError:
            raise _err(
                path, f"{where}.{file_key}", f"cannot read {secret_path}", "Create the file (mode 0600)."
            ) from None
        if st.st_mode & 0o077:
            raise _err(
                path,
                f"{where}.{file_key}",
                f"{secret_path} is readable by group/others",
                f"Fix it with: chmod 600 {shlex.quote(str(secret_path))}",
            )
        value = secret_path.read_text(encoding="utf-8").strip()
        if not value:
            raise _err(path, f"{where}.{file_key}", f"{secret_path} is empty")
        return value
    if env_key in raw:
        var = str(raw[env_key])
        value = os.environ.get(var, "").strip()
        if not value:
            raise _err(
                path,
                f"{where}.{env_key}",
                f"environment variable {var} is not set",
                f"export {var}=... before starting the watcher",
            )
        return value
    return ""


def _check_url(path: Path, where: str, url: str, *, show: bool) -> str:
    parts = urlsplit(url)
    shown = url if show else "(the URL)"
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise _err(path, where, f"{shown} is not an http(s) URL")
    if parts.scheme == "http":
        host = parts.hostname
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            raise _err(
                path,
                where,
                f"{shown} uses plain http to {host}",
                "Use an https:// URL (plain http only to localhost).",
            )
    return url


def _number(path: Path, where: str, value: Any, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise _err(path, where, f"expected a number >= {minimum}, got {value!r}")
    return float(value)


def _str_list(path: Path, where: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _err(path, where, "expected a list of strings")
    return tuple(value)


_TARGET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def parse_target(path: Path, name: str, raw: Any) -> Target:
    where = f"targets.{name}"
    if not _TARGET_NAME.match(name):
        # The name is part of spool file names: no path separators, no leading dot.
        raise _err(
            path,
            where,
            "a target name is 1-64 letters, digits, '_', '.', '-' (starting with a letter or digit)",
        )
    if not isinstance(raw, dict):
        raise _err(path, where, "expected a mapping")
    kind = raw.get("type")
    if kind not in TARGET_TYPES:
        raise _err(path, f"{where}.type", f"{kind!r} is not one of {', '.join(TARGET_TYPES)}")
    allowed = _COMMON_KEYS + _TARGET_KEYS[kind]
    for key in raw:
        if key not in allowed:
            hint = (
                "Secrets go in a file or an environment variable: use url_file or url_env."
                if key in ("url", "password", "token")
                else None
            )
            raise _err(
                path,
                f"{where}.{key}",
                f"unknown key for a {kind} target (allowed: {', '.join(allowed)})",
                hint,
            )
    events = _str_list(path, f"{where}.events", raw.get("events"))
    for ev in events:
        if ev not in EVENTS:
            raise _err(path, f"{where}.events", f"unknown event {ev!r} (known: {', '.join(EVENTS)})")
    loops = _str_list(path, f"{where}.loops", raw.get("loops"))
    ca_file = None
    if raw.get("ca_file"):
        ca_file = Path(str(raw["ca_file"])).expanduser()
        if not ca_file.is_file():
            raise _err(path, f"{where}.ca_file", f"{ca_file} does not exist")
    timeout_s = _number(path, f"{where}.timeout_s", raw.get("timeout_s", 20.0), 1.0)
    common = {
        "name": name,
        "type": kind,
        "events": events,
        "loops": loops,
        "ca_file": ca_file,
        "timeout_s": timeout_s,
    }
    if kind == "email":
        for key in ("host", "from", "to"):
            if not raw.get(key):
                raise _err(path, f"{where}.{key}", "required for an email target")
        port = raw.get("port", 587)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise _err(path, f"{where}.port", f"expected a TCP port, got {port!r}")
        password = _read_secret(path, where, raw, "password")
        if password and not raw.get("username"):
            raise _err(path, f"{where}.username", "a password needs a username")
        return Target(
            **common,
            host=str(raw["host"]),
            port=port,
            sender=str(raw["from"]),
            recipients=_str_list(path, f"{where}.to", raw["to"]),
            username=str(raw.get("username") or ""),
            secret=password,
        )
    if kind == "webhook":
        token = _read_secret(path, where, raw, "token")
        if "url" in raw:
            if "url_file" in raw or "url_env" in raw:
                raise _err(path, where, "give url, url_file or url_env, only one")
            url = _check_url(path, f"{where}.url", str(raw["url"]), show=True)
        else:
            url = _read_secret(path, where, raw, "url")
            if not url:
                raise _err(path, where, "needs url, url_file or url_env")
            url = _check_url(path, where, url, show=False)
        return Target(**common, url=url, secret=token)
    url = _read_secret(path, where, raw, "url")
    if not url:
        raise _err(path, where, f"a {kind} webhook URL is a secret: give url_file or url_env")
    return Target(**common, url=_check_url(path, where, url, show=False))


def parse_config(data: Any, path: Path) -> WatchConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise _err(path, "top level", "expected a mapping with targets: and watch:")
    for key in data:
        if key not in ("targets", "watch"):
            raise _err(path, str(key), "unknown key (allowed: targets, watch)")
    raw_targets = data.get("targets") or {}
    if not isinstance(raw_targets, dict):
        raise _err(path, "targets", "expected a mapping of name -> target")
    targets = tuple(parse_target(path, str(n), r) for n, r in raw_targets.items())
    raw_watch = data.get("watch") or {}
    if not isinstance(raw_watch, dict):
        raise _err(path, "watch", "expected a mapping")
    for key in raw_watch:
        if key not in _WATCH_KEYS:
            raise _err(path, f"watch.{key}", f"unknown key (allowed: {', '.join(_WATCH_KEYS)})")
    defaults = WatchSettings()

    def num(key: str, default: float, minimum: float = 0.0) -> float:
        return (
            _number(path, f"watch.{key}", raw_watch.get(key, default), minimum)
            if key in raw_watch
            else default
        )

    settings = WatchSettings(
        poll_s=num("poll_s", defaults.poll_s, 0.1),
        status_interval_s=num("status_interval_s", defaults.status_interval_s),
        heartbeat_s=num("heartbeat_s", defaults.heartbeat_s, 1.0),
        retry_max_s=num("retry_max_s", defaults.retry_max_s, 1.0),
        group_window_s=num("group_window_s", defaults.group_window_s),
        thresholds=Thresholds(
            pending_after_s=num("pending_after_s", defaults.thresholds.pending_after_s),
            stall_after_s=num("stall_after_s", defaults.thresholds.stall_after_s),
        ),
        state_dir=Path(str(raw_watch["state_dir"])).expanduser() if raw_watch.get("state_dir") else None,
    )
    return WatchConfig(path=path, targets=targets, settings=settings)


def load_config(path: Path | str) -> WatchConfig:
    """Read, permission-check and validate the watch config; WatchConfigError names file and field."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WatchConfigError(
            f"watch config not found: {path}", hint="See docs/monitoring.md for an example."
        )
    check_private(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise WatchConfigError(redact_text(f"{path}: not valid YAML: {exc}")) from None
    return parse_config(data, path)
