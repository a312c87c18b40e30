"""meta.md: the dataset's header (written by `init`) and its `### Updates` notes, secrets redacted."""

from __future__ import annotations

from pathlib import Path

from usrbatch.dataset import schema as S
from usrbatch.dataset.layout import META
from usrbatch.dataset.ref import DatasetRef
from usrbatch.files import atomic_write_bytes
from usrbatch.redaction import redact_text


def meta_text(ref: DatasetRef, created_at: str, source: str, notes: str) -> str:
    return (
        f"name: {ref.dataset_id}\n"
        f"created_at: {created_at}\n"
        f"source: {source}\n"
        f"notes: {redact_text(notes)}\n"
        "schema: USR v1\n\n"
        "### Updates\n"
    )


def append_meta_note(dataset_dir: Path, note: str, command: str | None = None) -> None:
    """Append `- <ts>: <note>` (and an optional ```bash block) to meta.md, atomically."""
    path = Path(dataset_dir) / META
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    if text and not text.endswith("\n"):
        text += "\n"
    text += f"- {S.iso_utc(S.utc_now())}: {redact_text(note)}\n"
    if command:
        text += f"```bash\n{redact_text(command)}\n```\n"
    atomic_write_bytes(path, text.encode("utf-8"))
