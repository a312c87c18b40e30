"""Real receivers for alert tests: an HTTP server (webhook, Slack, Discord) and an SMTP server
with STARTTLS (aiosmtpd), both on 127.0.0.1, random ports."""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass
class HttpReceiver:
    """Collects POSTed JSON; `fail_next` makes the next N requests answer 503."""

    url: str
    received: list[dict] = field(default_factory=list)
    fail_next: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def bodies(self, path: str | None = None) -> list[dict]:
        with self.lock:
            return [r["body"] for r in self.received if path is None or r["path"] == path]


def start_http_receiver() -> tuple[HttpReceiver, ThreadingHTTPServer]:
    holder: dict[str, HttpReceiver] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            rec = holder["rec"]
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            with rec.lock:
                if rec.fail_next > 0:
                    rec.fail_next -= 1
                    self.send_response(503)
                    self.end_headers()
                    return
                rec.received.append(
                    {
                        "path": self.path,
                        "body": json.loads(raw),
                        "authorization": self.headers.get("Authorization"),
                        "content_type": self.headers.get("Content-Type"),
                    }
                )
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *_args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder["rec"] = HttpReceiver(url=f"http://127.0.0.1:{server.server_address[1]}")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return holder["rec"], server


@contextlib.contextmanager
def running_http_receiver() -> Iterator[HttpReceiver]:
    """An HttpReceiver for the duration of the block."""
    rec, server = start_http_receiver()
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """(cert, key) for 127.0.0.1, made now; the cert is also the CA bundle clients trust."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "usrbatch-test-smtp")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


@dataclass
class SmtpReceiver:
    port: int
    cert: Path
    messages: list[dict] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)


class _Handler:
    def __init__(self, rec: SmtpReceiver) -> None:
        self.rec = rec

    async def handle_DATA(self, _server, session, envelope) -> str:  # noqa: ANN001, N802 - aiosmtpd's hook
        self.rec.messages.append(
            {
                "from": envelope.mail_from,
                "to": list(envelope.rcpt_tos),
                "data": envelope.content.decode("utf-8", "replace"),
                "tls": session.ssl is not None,
            }
        )
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_smtp_receiver(
    directory: Path, *, username: str, password: str, starttls: bool = True
) -> tuple[SmtpReceiver, Controller]:
    """An SMTP server requiring STARTTLS (when `starttls`) and AUTH LOGIN/PLAIN with these credentials."""
    cert, key = self_signed_cert(directory)
    rec = SmtpReceiver(port=_free_port(), cert=cert)

    def authenticator(_server, _session, _envelope, mechanism, auth_data) -> AuthResult:  # noqa: ANN001
        if isinstance(auth_data, LoginPassword):
            user, pw = auth_data.login.decode(), auth_data.password.decode()
            rec.logins.append((user, mechanism))
            return AuthResult(success=user == username and pw == password, handled=False)
        return AuthResult(success=False, handled=False)

    kwargs: dict = {"authenticator": authenticator, "auth_require_tls": True}
    if starttls:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        kwargs.update(tls_context=context, require_starttls=True)
    else:
        kwargs.update(auth_require_tls=False)
    controller = Controller(_Handler(rec), hostname="127.0.0.1", port=rec.port, **kwargs)
    controller.start()
    return rec, controller


def secret_file(directory: Path, name: str, value: str) -> Path:
    path = directory / name
    path.write_text(value + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


def write_loop_spec(ws: Path, scheduler: str, name: str, steps: list[dict], iterations: int = 1) -> Path:
    """A loop spec over a small dataset with a `local` remote under `ws` (made on first use)."""
    import yaml

    from usrbatch.dataset.records import import_records, init_dataset

    if not (ws / "remotes.yaml").exists():
        init_dataset(ws / "local", "ns/demo")
        import_records(ws / "local" / "ns" / "demo", [{"sequence": s} for s in ("ACGTACGTAA", "GGGCCCTTTA")])
        (ws / "cluster").mkdir()
        (ws / "remotes.yaml").write_text(
            yaml.safe_dump({"remotes": {"hpc": {"type": "local", "base_dir": str(ws / "cluster")}}})
        )
    spec = {
        "name": f"{name}-{scheduler}",
        "dataset": "ns/demo",
        "root": "local",
        "remote": "hpc",
        "remotes_config": "remotes.yaml",
        "scheduler": scheduler,
        "iterations": iterations,
        "resources": {"time": "00:05:00"},
        "steps": steps,
    }
    if scheduler == "sge":
        spec["project"] = "usrbatch"
    path = ws / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path
