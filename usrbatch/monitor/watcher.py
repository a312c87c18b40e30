"""One poll of `usrbatch watch`: read new audit lines, ask the scheduler (rate-limited, one call per
scheduler for all watched jobs), derive alerts, queue them per target, save the ledger, drain the spool.

Order matters for "nothing twice": messages are queued (idempotent file names) before the ledger
records their alert ids and advances the cursors in one atomic write, and only then are they
sent. A watcher killed at any point re-derives the same alerts and finds them queued or recorded.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from usrbatch import auditlog
from usrbatch.errors import JobError
from usrbatch.jobs.loop import LoopState, load_state
from usrbatch.jobs.status import iter_audit
from usrbatch.monitor import spool
from usrbatch.monitor.alerts import (
    PROBLEMS,
    WATCH_TEST,
    Alert,
    Message,
    combine,
    group,
    heartbeat_alert,
    utc_iso,
)
from usrbatch.monitor.audit_alerts import alerts_from_audit, dataset_events_alert
from usrbatch.monitor.config import Target, WatchConfig
from usrbatch.monitor.cursor import read_lines, start_offset
from usrbatch.monitor.ledger import Ledger, load_ledger, save_ledger
from usrbatch.monitor.loop_views import loop_views
from usrbatch.monitor.status_alerts import StatusFacts, alerts_from_status
from usrbatch.monitor.targets import DeliveryError, send


@dataclass(frozen=True)
class PollResult:
    alerts: tuple[Alert, ...]  # new this poll (before filters)
    queued: int  # messages queued (all targets)
    delivered: int
    failed: int
    waiting: int
    errors: tuple[str, ...]
    status_checked: bool
    notes: tuple[str, ...] = ()


def _message_id(target: str, alerts: list[Alert]) -> str:
    digest = hashlib.sha256((f"{target}\n" + "\n".join(sorted(a.id for a in alerts))).encode("utf-8"))
    return digest.hexdigest()[:24]


def messages_for(target: Target, alerts: list[Alert]) -> list[Message]:
    """The target's share of a poll's alerts, one message per loop and kind of news (problems of a
    loop share one summary)."""
    buckets: dict[tuple[str, str], list[Alert]] = {}
    for a in alerts:
        if target.wants(a.event, a.loop_id):
            kind = "problem" if a.event in PROBLEMS else a.event
            buckets.setdefault((a.loop_id, kind), []).append(a)
    return [group(items, _message_id(target.name, items)) for items in buckets.values()]


def hold_problems(ledger: Ledger, alerts: list[Alert], now: float, window_s: float) -> list[Alert]:
    """Storm control across polls: after a loop's problem message, its later problems wait in the
    ledger until `window_s` has passed and then go out together (one summary). Returns the alerts to
    queue now (held ones whose window ended included); the ledger keeps the rest."""
    out: list[Alert] = []
    for alert in alerts:
        last = ledger.problem_at.get(alert.loop_id)
        if alert.event in PROBLEMS and alert.loop_id and last is not None and now - last < window_s:
            ledger.held[alert.id] = alert.to_json()
        else:
            out.append(alert)
    for alert_id, data in list(ledger.held.items()):
        last = ledger.problem_at.get(str(data.get("loop_id")))
        if last is None or now - last >= window_s:
            out.append(Alert.from_json(data))
            del ledger.held[alert_id]
    for alert in out:
        if alert.event in PROBLEMS and alert.loop_id:
            ledger.problem_at[alert.loop_id] = now
    return out


@dataclass
class Watcher:
    config: WatchConfig
    state_dir: Path
    find_loops: Callable[[], list[Path]]
    dataset_events: bool = False
    heartbeat: bool = False
    clock: Callable[[], float] = time.time
    _ledger: Ledger | None = field(default=None, init=False)

    @property
    def spool_dir(self) -> Path:
        return spool.spool_dir(self.state_dir)

    def _targets(self) -> dict[str, Target]:
        return {t.name: t for t in self.config.targets}

    def _send(self, target_name: str, message: Message) -> None:
        target = self._targets().get(target_name)
        if target is None:
            raise DeliveryError(f"{target_name}: no such target in the watch config (kept in the spool)")
        send(target, message)

    def _read_audit(
        self, ledger: Ledger, loop_dir: Path, state: LoopState, alerts: dict[str, Alert], notes: list[str]
    ) -> None:
        path = loop_dir / "audit.jsonl"
        key = str(path)
        offset, reset = start_offset(path, ledger.cursors.get(key))
        if reset:
            notes.append(f"{path}: {reset}; reading it again from the start")
            auditlog.get_logger().warning("watch.log_reset", path=key, reset=reset)
        kinds = {j.key: j.kind for j in state.jobs}
        for line in read_lines(path, offset):
            for alert in alerts_from_audit(line.data, kinds):
                alerts.setdefault(alert.id, alert)
            ledger.cursors[key] = line.cursor

    def _read_dataset_events(
        self, ledger: Ledger, state: LoopState, alerts: dict[str, Alert], notes: list[str], now: float
    ) -> None:
        path = Path(state.root) / state.dataset / ".events.log"
        key = str(path)
        offset, reset = start_offset(path, ledger.cursors.get(key))
        if reset:
            notes.append(f"{path}: {reset}; reading it again from the start")
        lines = []
        for line in read_lines(path, offset):
            if line.data:
                lines.append(line.data)
            ledger.cursors[key] = line.cursor
        if lines:
            alert = dataset_events_alert(state.dataset, lines, now)
            alerts.setdefault(alert.id, alert)

    def _status_alerts(
        self,
        ledger: Ledger,
        loops: list[tuple[Path, LoopState]],
        alerts: dict[str, Alert],
        notes: list[str],
        now: float,
    ) -> None:
        seen_suspects: set[str] = set()
        for view in loop_views(loops):
            state, loop_dir = view.state, view.loop_dir
            if view.status is None:
                notes.append(f"{state.loop_id}: {view.error}")
                auditlog.get_logger().warning(
                    "watch.scheduler_unreachable", loop=state.loop_id, error=view.error
                )
                # A suspicion stands until the scheduler can be asked again.
                seen_suspects.update(k for k in ledger.suspects if k.startswith(f"{state.loop_id}/"))
                continue
            audit = loop_dir / "audit.jsonl"
            cancelled = {
                str(i)
                for ev in iter_audit(loop_dir)
                if ev.get("event") == "loop.cancelled"
                for i in ev.get("job_ids") or []
            }
            facts = StatusFacts(
                after={j.key: tuple(j.after) for j in state.jobs},
                submitted_at={j.key: j.submitted_at for j in state.jobs},
                cancelled_ids=frozenset(cancelled),
                last_progress=audit.stat().st_mtime if audit.exists() else None,
            )
            found, suspects = alerts_from_status(view.status, facts, now, self.config.settings.thresholds)
            for alert in found:
                prev = alerts.get(alert.id)
                alerts[alert.id] = alert if prev is None else combine(prev, alert)
            for alert in suspects:
                seen_suspects.add(alert.id)
                if alert.id in ledger.suspects:
                    alerts.setdefault(alert.id, alert)
                else:
                    ledger.suspects[alert.id] = now
        ledger.suspects = {k: t for k, t in ledger.suspects.items() if k in seen_suspects}

    def poll(self, *, force_status: bool = False) -> PollResult:
        """One pass; see the module docstring for the order that makes it restart-safe."""
        now = self.clock()
        if self._ledger is None:
            self._ledger = load_ledger(self.state_dir)
        ledger = self._ledger
        alerts: dict[str, Alert] = {}
        notes: list[str] = []
        loops: list[tuple[Path, LoopState]] = []
        for loop_dir in self.find_loops():
            try:
                state = load_state(loop_dir)
            except JobError as exc:  # one corrupt loop must not blind the watcher to the others
                notes.append(f"{loop_dir}: skipped: {exc.message}")
                continue
            if state is None:
                continue
            loops.append((loop_dir, state))
            self._read_audit(ledger, loop_dir, state, alerts, notes)
            if self.dataset_events:
                self._read_dataset_events(ledger, state, alerts, notes, now)
        settings = self.config.settings
        status_checked = force_status or now - ledger.last_status_at >= settings.status_interval_s
        if status_checked and loops:
            self._status_alerts(ledger, loops, alerts, notes, now)
            ledger.last_status_at = now
        if self.heartbeat and now - ledger.heartbeat_at >= settings.heartbeat_s:
            hb = heartbeat_alert(now, settings.heartbeat_s, [s.loop_id for _d, s in loops])
            alerts.setdefault(hb.id, hb)
            ledger.heartbeat_at = now
        fresh = hold_problems(
            ledger,
            [a for a in alerts.values() if a.id not in ledger.sent and a.id not in ledger.held],
            now,
            settings.group_window_s,
        )
        if ledger.held:
            notes.append(f"{len(ledger.held)} problem alert(s) held for their loop's next summary")
        queued_by_target: dict[str, set[str]] = {}
        for entry in spool.entries(self.spool_dir):
            queued_by_target.setdefault(entry.target, set()).update(entry.message.alert_ids)
        queued = 0
        log = auditlog.get_logger()
        for target in self.config.targets:
            mine = [a for a in fresh if a.id not in queued_by_target.get(target.name, set())]
            for message in messages_for(target, mine):
                spool.enqueue(self.spool_dir, target.name, message, now)
                log.info(
                    "watch.queued",
                    target=target.name,
                    message_id=message.id,
                    alert_event=message.event,
                    loop=message.loop_id,
                    alerts=message.alert_ids,
                )
                queued += 1
        for alert in fresh:
            ledger.sent[alert.id] = now
        ledger.polled_at = now
        ledger.prune(now)
        save_ledger(self.state_dir, ledger)
        drained = spool.drain(self.spool_dir, self._send, now, retry_max_s=settings.retry_max_s)
        for error in drained.errors:
            log.warning("watch.delivery_failed", error=error)
        if drained.delivered:
            log.info("watch.delivered", messages=drained.delivered)
        return PollResult(
            alerts=tuple(fresh),
            queued=queued,
            delivered=drained.delivered,
            failed=drained.failed,
            waiting=drained.waiting,
            errors=drained.errors,
            status_checked=status_checked,
            notes=tuple(notes),
        )

    def follow(
        self, *, stop: Callable[[], bool] = lambda: False, emit: Callable[[str], None] = lambda _m: None
    ) -> None:
        """Poll every poll_s until `stop()` says so (or the process is killed: the ledger is always consistent)."""
        while not stop():
            result = self.poll()
            for line in describe(result):
                emit(line)
            time.sleep(self.config.settings.poll_s)


def describe(result: PollResult) -> list[str]:
    """Human lines for one poll (target names only; never URLs or credentials)."""
    lines = list(result.notes)
    for alert in result.alerts:
        lines.append(f"{utc_iso(time.time())} {alert.event}: {alert.title}")
    if result.queued or result.delivered or result.failed:
        lines.append(
            f"queued {result.queued}, delivered {result.delivered}, failed {result.failed}, waiting {result.waiting}"
        )
    lines.extend(f"delivery failed: {e}" for e in result.errors)
    return lines


def send_test(config: WatchConfig, now: float | None = None) -> list[tuple[str, str | None]]:
    """Send one test message to every target directly; [(target, error or None)]."""
    now = time.time() if now is None else now
    host = os.uname().nodename
    alert = Alert(
        id=f"test/{int(now)}",
        event=WATCH_TEST,
        loop_id="",
        title="usrbatch watch: test message",
        text=f"If you can read this, usrbatch on {host} can reach this target.",
        ts=utc_iso(now),
    )
    results: list[tuple[str, str | None]] = []
    for target in config.targets:
        message = group([alert], _message_id(target.name, [alert]))
        try:
            send(target, message)
            results.append((target.name, None))
        except DeliveryError as exc:
            results.append((target.name, str(exc)))
    return results
