"""The watch config: private file, secrets by file or env (never inline, never shown), filters."""

from __future__ import annotations

from pathlib import Path

import pytest
from receivers import secret_file

from usrbatch.cli.usrbatch_main import main
from usrbatch.monitor.config import WatchConfigError, load_config


def test_group_readable_config_is_refused_with_the_chmod_fix(tmp_path: Path, write_config, capsys) -> None:  # noqa: ANN001
    path = write_config({"targets": {}})
    path.chmod(0o640)
    with pytest.raises(WatchConfigError) as err:
        load_config(path)
    assert "0640" in err.value.message and err.value.hint == f"Fix it with: chmod 600 {path}"
    with pytest.raises(SystemExit) as exit_:
        main(["watch", "--config", str(path), "--test"])
    assert exit_.value.code == 2
    out = capsys.readouterr().out
    assert (
        out.startswith("ERROR: Refusing watch config")
        and f"chmod 600 {path}" in out
        and "Traceback" not in out
    )


def test_inline_slack_url_is_refused(write_config) -> None:  # noqa: ANN001
    path = write_config(
        {"targets": {"team": {"type": "slack", "url": "https://hooks.slack.com/services/T/B/x"}}}
    )
    with pytest.raises(WatchConfigError) as err:
        load_config(path)
    assert "targets.team.url" in err.value.message and "url_file or url_env" in (err.value.hint or "")
    assert "hooks.slack.com" not in err.value.message


def test_secret_file_must_be_private_and_env_must_be_set(tmp_path: Path, write_config, monkeypatch) -> None:  # noqa: ANN001
    url_file = secret_file(tmp_path, "url", "https://discord.com/api/webhooks/1/very-secret")
    url_file.chmod(0o644)
    with pytest.raises(WatchConfigError) as err:
        load_config(write_config({"targets": {"lab": {"type": "discord", "url_file": str(url_file)}}}))
    assert "targets.lab.url_file" in err.value.message and f"chmod 600 {url_file}" in (err.value.hint or "")
    monkeypatch.delenv("NOPE_URL", raising=False)
    with pytest.raises(WatchConfigError) as err:
        load_config(write_config({"targets": {"lab": {"type": "discord", "url_env": "NOPE_URL"}}}))
    assert "NOPE_URL is not set" in err.value.message


def test_plain_http_only_to_loopback_and_events_are_checked(write_config) -> None:  # noqa: ANN001
    with pytest.raises(WatchConfigError, match="plain http"):
        load_config(
            write_config({"targets": {"h": {"type": "webhook", "url": "http://ops.example.org/hook"}}})
        )
    with pytest.raises(WatchConfigError, match="unknown event 'job.exploded'"):
        load_config(
            write_config(
                {
                    "targets": {
                        "h": {"type": "webhook", "url": "https://o.example/h", "events": ["job.exploded"]}
                    }
                }
            )
        )
    with pytest.raises(WatchConfigError, match=r"watch\.poll_s"):
        load_config(write_config({"watch": {"poll_s": "fast"}}))


def test_filters_by_event_and_loop(write_config) -> None:  # noqa: ANN001
    cfg = load_config(
        write_config(
            {
                "targets": {
                    "all": {"type": "webhook", "url": "https://o.example/a"},
                    "some": {
                        "type": "webhook",
                        "url": "https://o.example/b",
                        "events": ["job.failed", "watch.heartbeat"],
                        "loops": ["dense-*"],
                    },
                }
            }
        )
    )
    every, some = cfg.targets
    assert every.wants("job.failed", "x") and every.wants("loop.completed", "x")
    assert not every.wants("watch.heartbeat", "")  # heartbeats only where asked for
    assert some.wants("job.failed", "dense-1") and not some.wants("job.failed", "infer-1")
    assert not some.wants("loop.completed", "dense-1") and some.wants("watch.heartbeat", "")


def test_a_token_in_an_inline_webhook_url_is_not_echoed(write_config) -> None:  # noqa: ANN001
    path = write_config(
        {"targets": {"h": {"type": "webhook", "url": "http://ops.example.org/hook?token=Zx81kfQ0aaB7"}}}
    )
    with pytest.raises(WatchConfigError) as err:
        load_config(path)
    assert "plain http" in err.value.message and "Zx81kfQ0aaB7" not in err.value.message


def test_target_names_cannot_escape_the_spool(write_config) -> None:  # noqa: ANN001
    with pytest.raises(WatchConfigError, match=r"targets\.\.\./x: a target name is"):
        load_config(write_config({"targets": {"../x": {"type": "webhook", "url": "https://o.example/h"}}}))
