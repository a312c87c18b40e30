"""The error hierarchy: every user-facing failure is a UsrError with an actionable message."""

from __future__ import annotations


class UsrError(Exception):
    """A failure the user can act on. The CLI prints `ERROR: <message>` (+ `Hint:`) and exits 2."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class DatasetError(UsrError):
    """A dataset is missing, malformed or its id is invalid."""


class SchemaError(UsrError):
    """Input data does not fit the dataset schema or the namespace registry."""


class NamespaceError(SchemaError):
    """A namespace is unknown, reserved, or badly declared."""


class EventLogError(UsrError):
    """The event log is malformed or a record cannot be appended."""


class VerificationError(UsrError):
    """A transfer or a check did not verify (post-pull, post-push-sidecars, ...)."""


class TransferError(UsrError):
    """A transfer failed: connection, lease, lock or remote command."""


class RemoteUnavailableError(TransferError):
    """The remote cannot be reached or lacks a prerequisite."""


class RemoteConfigError(UsrError):
    """remotes.yaml is missing, unreadable or invalid."""


class JobError(UsrError):
    """A job-plane failure: loop spec, template, scheduler."""


class UserAbort(Exception):
    """The user declined a confirmation prompt (exit 130)."""
