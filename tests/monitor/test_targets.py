"""Targets against real receivers: JSON webhook, Slack and Discord shapes over HTTP; email over
SMTP with STARTTLS (aiosmtpd, a self-signed cert made here). Secrets never leak into errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from receivers import HttpReceiver, SmtpReceiver, secret_file, start_smtp_receiver

from usrbatch.monitor.alerts import Alert, group
from usrbatch.monitor.config import load_config
from usrbatch.monitor.targets import DeliveryError, send
from usrbatch.monitor.watcher import send_test

ALERT = Alert(
    id="demo/42/failed",
    event="job.failed",
    loop_id="demo",
    title="demo: job i001-01-work failed (exit 3)",
    text="job i001-01-work (job 42) of loop demo exited with 3.",
    ts="2026-11-26T13:00:00Z",
    fields={"job_id": "42", "exit_code": 3},
)


def _targets(tmp_path: Path, rec: HttpReceiver, write_config, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN001, ANN202
    secret_file(tmp_path, "slack-url", f"{rec.url}/slack/T000/B000/XXXXsecretslackpath")
    monkeypatch.setenv("TEST_DISCORD_URL", f"{rec.url}/discord/123/secret-discord-token")
    secret_file(tmp_path, "hook-token", "hook-Token-0123456789abcdef")
    cfg = load_config(
        write_config(
            {
                "targets": {
                    "hook": {
                        "type": "webhook",
                        "url": f"{rec.url}/hook",
                        "token_file": str(tmp_path / "hook-token"),
                    },
                    "team": {"type": "slack", "url_file": str(tmp_path / "slack-url")},
                    "lab": {"type": "discord", "url_env": "TEST_DISCORD_URL"},
                }
            }
        )
    )
    return {t.name: t for t in cfg.targets}


def test_webhook_slack_and_discord_payloads_arrive(
    tmp_path: Path, http_receiver: HttpReceiver, write_config, monkeypatch
) -> None:  # noqa: ANN001
    targets = _targets(tmp_path, http_receiver, write_config, monkeypatch)
    message = group([ALERT], "m1")
    for target in targets.values():
        send(target, message)
    by_path = {r["path"].split("/")[1]: r for r in http_receiver.received}
    hook = by_path["hook"]
    assert hook["authorization"] == "Bearer hook-Token-0123456789abcdef"
    assert hook["content_type"] == "application/json"
    assert hook["body"]["event"] == "job.failed" and hook["body"]["severity"] == "error"
    assert (
        hook["body"]["alerts"][0]["id"] == "demo/42/failed"
        and hook["body"]["alerts"][0]["fields"]["exit_code"] == 3
    )
    slack = by_path["slack"]["body"]
    assert slack["text"] == ALERT.title
    assert slack["blocks"][0]["type"] == "section" and slack["blocks"][0]["text"]["type"] == "mrkdwn"
    assert ALERT.text in slack["blocks"][0]["text"]["text"]
    discord = by_path["discord"]["body"]
    assert discord["content"] == ALERT.title
    assert discord["embeds"][0]["description"] == ALERT.text and isinstance(
        discord["embeds"][0]["color"], int
    )
    assert discord["allowed_mentions"] == {"parse": []}
    assert by_path["slack"]["authorization"] is None  # the Slack URL is the secret; no header


def test_watch_test_sends_one_message_per_target(
    tmp_path: Path, http_receiver: HttpReceiver, write_config, monkeypatch
) -> None:  # noqa: ANN001
    targets = _targets(tmp_path, http_receiver, write_config, monkeypatch)
    cfg = load_config(tmp_path / "watch.yaml")
    results = send_test(cfg)
    assert sorted(results) == sorted((name, None) for name in targets)
    assert len(http_receiver.received) == 3
    assert all(
        r["body"].get("event") == "watch.test" or "test message" in str(r["body"])
        for r in http_receiver.received
    )


def test_http_errors_never_show_the_secret_url(
    tmp_path: Path, http_receiver: HttpReceiver, write_config, monkeypatch
) -> None:  # noqa: ANN001
    targets = _targets(tmp_path, http_receiver, write_config, monkeypatch)
    http_receiver.fail_next = 1
    with pytest.raises(DeliveryError) as err:
        send(targets["team"], group([ALERT], "m2"))
    assert "503" in str(err.value) and "XXXXsecretslackpath" not in str(err.value)
    assert "XXXXsecretslackpath" not in repr(targets["team"])
    # A receiver that is gone: the connection error names the target, not the URL.
    monkeypatch.setenv("TEST_DISCORD_URL", "http://127.0.0.1:9/discord/secret-discord-token")
    lab = {t.name: t for t in load_config(tmp_path / "watch.yaml").targets}["lab"]
    with pytest.raises(DeliveryError) as err:
        send(lab, group([ALERT], "m3"))
    assert str(err.value).startswith("lab:") and "secret-discord-token" not in str(err.value)


def test_email_over_starttls_with_login(
    tmp_path: Path, smtp_receiver: SmtpReceiver, write_config, monkeypatch
) -> None:  # noqa: ANN001
    monkeypatch.setenv("TEST_SMTP_PASSWORD", "s3cret-Smtp-pw9")
    cfg = load_config(
        write_config(
            {
                "targets": {
                    "me": {
                        "type": "email",
                        "host": "127.0.0.1",
                        "port": smtp_receiver.port,
                        "from": "usrbatch@lab.example",
                        "to": ["alice@lab.example", "bob@lab.example"],
                        "username": "alice",
                        "password_env": "TEST_SMTP_PASSWORD",
                        "ca_file": str(smtp_receiver.cert),
                    }
                }
            }
        )
    )
    send(cfg.targets[0], group([ALERT], "m4"))
    assert len(smtp_receiver.messages) == 1
    mail = smtp_receiver.messages[0]
    assert mail["tls"] is True
    assert mail["to"] == ["alice@lab.example", "bob@lab.example"] and mail["from"] == "usrbatch@lab.example"
    assert "Subject: [usrbatch error] demo: job i001-01-work failed (exit 3)" in mail["data"]
    assert "exited with 3" in mail["data"] and "s3cret-Smtp-pw9" not in mail["data"]
    assert [u for u, _m in smtp_receiver.logins] == ["alice"]


def test_email_wrong_password_and_untrusted_cert_fail_without_leaking(
    tmp_path: Path, smtp_receiver: SmtpReceiver, write_config, monkeypatch
) -> None:  # noqa: ANN001
    monkeypatch.setenv("TEST_SMTP_PASSWORD", "Wrong-Password-77x")
    base = {
        "type": "email",
        "host": "127.0.0.1",
        "port": smtp_receiver.port,
        "from": "u@lab.example",
        "to": "a@lab.example",
        "username": "alice",
        "password_env": "TEST_SMTP_PASSWORD",
    }
    cfg = load_config(
        write_config({"targets": {"me": {**base, "ca_file": str(smtp_receiver.cert)}, "nocert": base}})
    )
    targets = {t.name: t for t in cfg.targets}
    with pytest.raises(DeliveryError) as err:
        send(targets["me"], group([ALERT], "m5"))
    assert "Wrong-Password-77x" not in str(err.value) and "SMTPAuthenticationError" in str(err.value)
    with pytest.raises(DeliveryError) as err:  # the self-signed cert is not in the system bundle
        send(targets["nocert"], group([ALERT], "m6"))
    assert "CERTIFICATE_VERIFY_FAILED" in str(err.value) or "certificate" in str(err.value).lower()
    assert smtp_receiver.messages == []


def test_email_refuses_a_server_without_starttls(tmp_path: Path, write_config) -> None:  # noqa: ANN001
    rec, controller = start_smtp_receiver(tmp_path, username="alice", password="x", starttls=False)
    try:
        cfg = load_config(
            write_config(
                {
                    "targets": {
                        "me": {
                            "type": "email",
                            "host": "127.0.0.1",
                            "port": rec.port,
                            "from": "u@x.example",
                            "to": "a@x.example",
                        }
                    }
                }
            )
        )
        with pytest.raises(DeliveryError, match="does not offer STARTTLS"):
            send(cfg.targets[0], group([ALERT], "m7"))
        assert rec.messages == []
    finally:
        controller.stop()
