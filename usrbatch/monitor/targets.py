"""Where messages go: payload shapes (generic JSON, Slack, Discord, email) and their senders.

A send either returns (delivered) or raises DeliveryError with a message that holds no secret: the
target's URL, token and password are scrubbed, and the rest goes through `redact_text`.
"""

from __future__ import annotations

import json
import smtplib
import ssl
import urllib.error
import urllib.request
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from usrbatch import __version__
from usrbatch.monitor.alerts import Message
from usrbatch.monitor.config import Target
from usrbatch.redaction import REDACTED, redact_text

SLACK_TEXT_MAX = 3000  # a section block's text limit
DISCORD_CONTENT_MAX = 2000
DISCORD_DESCRIPTION_MAX = 4096
_DISCORD_COLOURS = {"error": 0xD32F2F, "warning": 0xF9A825, "info": 0x1976D2}
_SLACK_ICONS = {"error": ":red_circle:", "warning": ":warning:", "info": ":information_source:"}


class DeliveryError(Exception):
    """A message did not reach its target; `str()` is safe to log and spool."""


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def webhook_payload(msg: Message) -> dict:
    """The generic JSON body: the message plus its alerts (each with id, event, fields)."""
    return {"source": "usrbatch", "version": __version__, **msg.to_json()}


def slack_payload(msg: Message) -> dict:
    """A Slack incoming-webhook body: `text` (notifications) plus one mrkdwn section block."""
    head = f"{_SLACK_ICONS.get(msg.severity, '')} *{msg.title}*".strip()
    return {
        "text": _cut(f"{msg.title}", SLACK_TEXT_MAX),
        "blocks": [
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": _cut(f"{head}\n{msg.text}", SLACK_TEXT_MAX)},
            }
        ],
    }


def discord_payload(msg: Message) -> dict:
    """A Discord webhook body: `content` plus one embed (title, description, colour)."""
    return {
        "content": _cut(msg.title, DISCORD_CONTENT_MAX),
        "embeds": [
            {
                "title": _cut(msg.title, 256),
                "description": _cut(msg.text, DISCORD_DESCRIPTION_MAX),
                "color": _DISCORD_COLOURS.get(msg.severity, 0x1976D2),
                "footer": {"text": f"usrbatch {msg.event} · {msg.id[:12]}"},
            }
        ],
        "allowed_mentions": {"parse": []},
    }


def email_message(target: Target, msg: Message) -> EmailMessage:
    mail = EmailMessage()
    mail["Subject"] = f"[usrbatch {msg.severity}] {msg.title}"
    mail["From"] = target.sender
    mail["To"] = ", ".join(target.recipients)
    mail["Date"] = formatdate(localtime=False)
    mail["Message-ID"] = make_msgid(idstring=msg.id[:16], domain="usrbatch.invalid")
    mail["X-Usrbatch-Event"] = msg.event
    body = [msg.text, "", f"event: {msg.event}", f"loop: {msg.loop_id or '-'}", f"id: {msg.id}"]
    mail.set_content("\n".join(body) + "\n")
    return mail


def _scrub(target: Target, text: str) -> str:
    for value in target.secrets():
        text = text.replace(value, REDACTED)
    return redact_text(text)


def _tls_context(target: Target) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(target.ca_file) if target.ca_file else None)


def _post_json(target: Target, body: dict) -> None:
    headers = {"Content-Type": "application/json", "User-Agent": f"usrbatch/{__version__}"}
    if target.type == "webhook" and target.secret:
        headers["Authorization"] = f"Bearer {target.secret}"
    req = urllib.request.Request(
        target.url, data=json.dumps(body).encode("utf-8"), headers=headers, method="POST"
    )
    context = _tls_context(target) if target.url.startswith("https:") else None
    try:
        with urllib.request.urlopen(req, timeout=target.timeout_s, context=context) as resp:  # noqa: S310 - http(s) only (config checks)
            resp.read(65536)
    except urllib.error.HTTPError as exc:
        raise DeliveryError(_scrub(target, f"{target.name}: HTTP {exc.code} {exc.reason}")) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DeliveryError(_scrub(target, f"{target.name}: {reason}")) from None


def _send_email(target: Target, msg: Message) -> None:
    mail = email_message(target, msg)
    try:
        with smtplib.SMTP(target.host, target.port, timeout=target.timeout_s) as smtp:
            smtp.ehlo()
            if not smtp.has_extn("starttls"):
                raise DeliveryError(
                    f"{target.name}: {target.host}:{target.port} does not offer STARTTLS; not sending in clear"
                )
            smtp.starttls(context=_tls_context(target))
            smtp.ehlo()
            if target.username:
                smtp.login(target.username, target.secret)
            smtp.send_message(mail)
    except DeliveryError:
        raise
    except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:
        raise DeliveryError(_scrub(target, f"{target.name}: {type(exc).__name__}: {exc}")) from None


def send(target: Target, msg: Message) -> None:
    """Deliver `msg` to `target` once; DeliveryError (secret-free) when it did not arrive."""
    if target.type == "email":
        _send_email(target, msg)
    elif target.type == "slack":
        _post_json(target, slack_payload(msg))
    elif target.type == "discord":
        _post_json(target, discord_payload(msg))
    else:
        _post_json(target, webhook_payload(msg))
