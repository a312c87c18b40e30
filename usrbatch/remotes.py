"""remotes.yaml: where it is, what a remote looks like, loading, validating and saving it.

The file is chosen by `--remotes-config` (the `usr` group exports it as USR_REMOTES_PATH) or by
`$USR_REMOTES_PATH`. There is no implicit default. Only `usr remotes wizard` creates a missing file
(mode 0600, a new parent directory 0700); otherwise users copy `remotes.example.yaml` first. A file
that group or others can write is refused, as OpenSSH refuses such an ssh config (remotes_trust.py).
Unknown keys are errors that name the file, the remote and the closest known key.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from usrbatch.errors import RemoteConfigError
from usrbatch.files import atomic_write_text
from usrbatch.remotes_trust import require_trusted_config

ENV_PATH = "USR_REMOTES_PATH"
REMOTE_TYPES = ("ssh", "local")
SSH_REQUIRED = ("host", "user", "base_dir")
LOCAL_REQUIRED = ("base_dir",)
LOCAL_KEYS = ("type", "base_dir", "repo_root", "local_repo_root")
SSH_KEYS = (
    *LOCAL_KEYS,
    "host",
    "user",
    "port",
    "batch_mode",
    "ssh_key_env",
    "transport",
    "control_persist",
)
TRANSPORTS = ("openssh", "paramiko")  # ssh remotes: the system ssh client, or in-process paramiko
DEFAULT_CONTROL_PERSIST_S = 1800  # an openssh master lives this long after its last session
TOP_KEYS = ("remotes",)


@dataclass(frozen=True)
class RemoteConfig:
    """One named remote. `ssh`: a host reached over SSH; `local`: a directory on this machine."""

    name: str
    type: Literal["ssh", "local"]
    base_dir: str
    host: str | None = None
    user: str | None = None
    port: int = 22
    ssh_key_env: str | None = None
    batch_mode: bool = True
    repo_root: str | None = None
    local_repo_root: str | None = None
    transport: Literal["openssh", "paramiko"] | None = None  # None: openssh where `ssh` exists
    control_persist: int | None = None  # seconds (openssh); None: DEFAULT_CONTROL_PERSIST_S

    @property
    def target(self) -> str:
        """`user@host` for ssh, `local` otherwise."""
        if self.type == "ssh":
            return f"{self.user}@{self.host}" if self.user else str(self.host)
        return "local"

    @property
    def label(self) -> str:
        """Human-readable target with base_dir: `alice@scc1.bu.edu:/proj/usr` or `local:/data`."""
        if self.type == "ssh":
            port = f":{self.port}" if self.port != 22 else ""
            return f"{self.target}{port}:{self.base_dir}"
        return f"local:{self.base_dir}"

    def ssh_key_path(self) -> Path | None:
        """The key file named by `ssh_key_env`, or None when unset (agent / default keys).

        Raises RemoteConfigError when the variable is named but not set.
        """
        if not self.ssh_key_env:
            return None
        value = os.environ.get(self.ssh_key_env)
        if not value:
            raise RemoteConfigError(
                f"Environment variable '{self.ssh_key_env}' not set (SSH key path).",
                hint=f"export {self.ssh_key_env}=~/.ssh/id_ed25519, or remove ssh_key_env from remote '{self.name}'.",
            )
        return Path(value).expanduser()

    def to_yaml(self) -> dict[str, Any]:
        """The mapping written under `remotes.<name>` (every key of the type, nulls included)."""
        if self.type == "local":
            out: dict[str, Any] = {"type": "local", "base_dir": self.base_dir}
            for key in ("repo_root", "local_repo_root"):  # FILE mode roots, only when set
                if getattr(self, key):
                    out[key] = getattr(self, key)
            return out
        out = {
            "type": "ssh",
            "host": self.host,
            "user": self.user,
            "port": self.port,
            "base_dir": self.base_dir,
            "batch_mode": self.batch_mode,
            "ssh_key_env": self.ssh_key_env,
            "repo_root": self.repo_root,
            "local_repo_root": self.local_repo_root,
        }
        for key in ("transport", "control_persist"):  # only when chosen
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


def remotes_path(explicit: Path | str | None = None) -> Path:
    """The remotes.yaml in use: `explicit`, else $USR_REMOTES_PATH; RemoteConfigError otherwise."""
    value = str(explicit) if explicit else os.environ.get(ENV_PATH, "").strip()
    if not value:
        raise RemoteConfigError(
            "USR_REMOTES_PATH is required for remotes configuration.",
            hint="Copy remotes.example.yaml to a private path and pass --remotes-config PATH "
            "or export USR_REMOTES_PATH=PATH.",
        )
    return Path(value).expanduser().absolute()


def _unknown_key(key: object, allowed: tuple[str, ...], where: str) -> RemoteConfigError:
    close = difflib.get_close_matches(str(key), allowed, n=1)
    guess = f" Did you mean '{close[0]}'?" if close else ""
    return RemoteConfigError(
        f"{where}: unknown key '{key}'.{guess} Known keys: {', '.join(allowed)}.",
    )


def _read_raw(path: Path, *, check_permissions: bool = True) -> dict[str, Any]:
    if not path.exists():
        raise RemoteConfigError(
            f"Remote config not found: {path}. Copy remotes.example.yaml to a private path and select it "
            "with --remotes-config or USR_REMOTES_PATH."
        )
    if check_permissions:
        require_trusted_config(path, "remotes.yaml")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise RemoteConfigError(f"Failed to read config {path}: {exc}") from exc
    if data is None:
        return {"remotes": {}}
    if not isinstance(data, dict):
        raise RemoteConfigError(f"Failed to read config {path}: top level must be a mapping with 'remotes:'.")
    for key in data:
        if key not in TOP_KEYS:
            raise _unknown_key(key, TOP_KEYS, str(path))
    remotes = data.get("remotes")
    if remotes is None:
        data["remotes"] = {}
    elif not isinstance(remotes, dict):
        raise RemoteConfigError(
            f"Failed to read config {path}: 'remotes' must be a mapping of name -> settings."
        )
    return data


def _parse_bool(name: str, key: str, value: Any, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    raise RemoteConfigError(f"Remote '{name}' key '{key}' must be true or false, got {value!r}.")


def _opt_str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


_DURATION = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any, where: str) -> int:
    """`control_persist`: seconds as an integer, or `90s`, `30m`, `2h`, `1d` (as ssh_config's
    time format); RemoteConfigError naming `where` otherwise."""
    text = str(value).strip().lower()
    ok = not isinstance(value, bool) and bool(text)
    seconds = 0
    if ok and text.isdigit():
        seconds = int(text)
    elif ok and text[:-1].isdigit() and text[-1] in _DURATION:
        seconds = int(text[:-1]) * _DURATION[text[-1]]
    else:
        ok = False
    if not ok or seconds <= 0:
        raise RemoteConfigError(
            f"{where} key 'control_persist' must be a positive duration such as 600, 90s, 30m or 2h, "
            f"got {value!r}."
        )
    return seconds


def _parse_transport(value: Any, where: str) -> Literal["openssh", "paramiko"] | None:
    if value is None or value == "":
        return None
    if value not in TRANSPORTS:
        close = difflib.get_close_matches(str(value), TRANSPORTS, n=1)
        guess = f" Did you mean '{close[0]}'?" if close else ""
        raise RemoteConfigError(
            f"{where} key 'transport' must be one of {', '.join(TRANSPORTS)}, got {value!r}.{guess}",
            hint="openssh uses the system ssh client (ControlMaster, your whole ssh_config); "
            "paramiko runs SSH in-process.",
        )
    return value


def parse_remote(name: str, raw: Any, path: Path | None = None) -> RemoteConfig:
    """Validate one `remotes.<name>` mapping; RemoteConfigError names the remote and the key (and
    the file, when given)."""
    if not isinstance(raw, dict):
        raise RemoteConfigError(f"Remote '{name}' must be a mapping of settings (host, user, base_dir, ...).")
    kind = str(raw.get("type") or "ssh")
    if kind not in REMOTE_TYPES:
        raise RemoteConfigError(
            f"Remote '{name}' has unsupported type '{kind}'. Supported types: {', '.join(REMOTE_TYPES)}."
        )
    allowed = SSH_KEYS if kind == "ssh" else LOCAL_KEYS
    for key in raw:
        if key not in allowed:
            where = f"{path}: remote '{name}'" if path else f"Remote '{name}'"
            if kind == "local" and key in SSH_KEYS:
                raise RemoteConfigError(
                    f"{where}: key '{key}' applies to ssh remotes only; this remote is type local.",
                    hint=f"Remove '{key}', or set type: ssh.",
                )
            raise _unknown_key(key, allowed, where)
    required = SSH_REQUIRED if kind == "ssh" else LOCAL_REQUIRED
    for key in required:
        if raw.get(key) in (None, ""):
            raise RemoteConfigError(f"Remote '{name}' missing required key: '{key}'")
    if kind == "local":
        return RemoteConfig(
            name=name,
            type="local",
            base_dir=str(raw["base_dir"]),
            repo_root=_opt_str(raw.get("repo_root")),
            local_repo_root=_opt_str(raw.get("local_repo_root")),
        )
    port_raw = raw.get("port", 22)
    try:
        port = int(22 if port_raw is None else port_raw)
    except (TypeError, ValueError):
        port = -1
    where = f"{path}: remote '{name}'" if path else f"Remote '{name}'"
    if not 0 < port < 65536 or isinstance(port_raw, bool):
        raise RemoteConfigError(f"Remote '{name}' key 'port' must be an integer 1-65535, got {port_raw!r}.")
    return RemoteConfig(
        name=name,
        type="ssh",
        host=str(raw["host"]),
        user=str(raw["user"]),
        port=port,
        base_dir=str(raw["base_dir"]),
        ssh_key_env=_opt_str(raw.get("ssh_key_env")),
        batch_mode=_parse_bool(name, "batch_mode", raw.get("batch_mode"), True),
        repo_root=_opt_str(raw.get("repo_root")),
        local_repo_root=_opt_str(raw.get("local_repo_root")),
        transport=_parse_transport(raw.get("transport"), where),
        control_persist=(
            None
            if raw.get("control_persist") in (None, "")
            else parse_duration(raw.get("control_persist"), where)
        ),
    )


def load_remotes(path: Path | str | None = None) -> dict[str, RemoteConfig]:
    """Every remote of remotes.yaml, validated, by name (sorted)."""
    cfg = remotes_path(path)
    raw = _read_raw(cfg)["remotes"]
    return {str(name): parse_remote(str(name), raw[name], cfg) for name in sorted(raw, key=str)}


def get_remote(name: str, path: Path | str | None = None, *, check_permissions: bool = True) -> RemoteConfig:
    """One remote by name; RemoteConfigError with a how-to-define hint when unknown.
    `check_permissions=False` skips the file permission rule (doctor reports it as a check)."""
    cfg = remotes_path(path)
    raw = _read_raw(cfg, check_permissions=check_permissions)["remotes"]
    if name not in raw:
        raise RemoteConfigError(
            f"Unknown remote '{name}'. Define it with 'usr remotes wizard --preset bu-scc ...' or "
            f"'usr remotes add {name} --type ssh ...'."
        )
    return parse_remote(name, raw[name], cfg)


def create_remotes_file(path: Path | str | None = None) -> Path | None:
    """Create an empty remotes file (0600; missing parent dirs 0700) when there is none.
    Returns the path when it was created, None when it already existed."""
    cfg = remotes_path(path)
    if cfg.exists():
        return None
    cfg.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(cfg, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return None
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("remotes: {}\n")
    os.chmod(cfg, 0o600)  # whatever the umask
    return cfg


def save_remote(remote: RemoteConfig, path: Path | str | None = None) -> Path:
    """Add or replace one remote; rewrites the whole file atomically (safe_dump, sort_keys).

    The file must already exist (`create_remotes_file` makes one). Other remotes are kept as they
    were read; the file keeps its mode. Returns the path written.
    """
    cfg = remotes_path(path)
    data = _read_raw(cfg)
    data["remotes"][remote.name] = remote.to_yaml()
    text = yaml.safe_dump(data, sort_keys=True, default_flow_style=False)
    atomic_write_text(cfg, text, mode=cfg.stat().st_mode & 0o777)
    return cfg
