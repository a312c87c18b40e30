"""Monitoring: `usrbatch watch` (events from audit logs and the scheduler, delivered to webhooks,
Slack, Discord and email through a spool) and `usrbatch metrics` (a Prometheus textfile).

Modules: cursor (follow an append-only log across truncation and rotation), ledger (the watcher's
cursors + sent alert ids, one atomic file), events (alerts derived from audit lines and the joined
status), config (the watch YAML), targets (payload shapes and senders), spool (undelivered
messages with backoff), watcher (one poll), metrics (the textfile).
"""
