"""What the ssh modules need of paramiko without importing it (paramiko, with the invoke and
cryptography it loads, costs ~0.4 s of CPU at start-up).

The `openssh` transport uses paramiko only for SFTP (its SFTPClient over the `ssh -s sftp` pipe,
which file bytes take only in the sh-only fallback: agent streams carry them otherwise), so its
commands normally never import it: the ssh modules import paramiko inside the functions that call
it, name its types under TYPE_CHECKING, and catch its exceptions through `paramiko_errors()`.
"""

from __future__ import annotations

import sys

# Per-channel receive window: bounds what paramiko may buffer per SFTP session (x4 sessions) and
# still allows 16 MiB / RTT per session on a real link (~330 MB/s at 50 ms). 64 MiB measured no
# faster on loopback (docs/benchmarks.md).
WINDOW_SIZE = 16 * 1024 * 1024
MAX_PACKET = 32768


def paramiko_errors() -> tuple[type[BaseException], ...]:
    """(paramiko.SSHException,) once paramiko is loaded, else (): a process that never imported
    paramiko cannot have raised its exceptions, so `except (OSError, *paramiko_errors())` catches
    exactly what `except (OSError, paramiko.SSHException)` would, without the import."""
    paramiko = sys.modules.get("paramiko")
    ssh_exception = getattr(paramiko, "SSHException", None)
    return (ssh_exception,) if isinstance(ssh_exception, type) else ()
