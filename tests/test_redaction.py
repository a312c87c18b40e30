"""Secrets redacted by value (token shapes) as well as by key; data-looking text left alone."""

from __future__ import annotations

import hashlib

import pytest

from usrbatch.redaction import REDACTED, has_secret, redact, redact_text

GHP = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
FINE_GRAINED = "github_pat_11ABCDEFG0abcdefghijkl_MNOPqrstUVWXyz0123456789abcdefghijklmnopqrstuvw"
GLPAT = "glpat-Xy7kQ2mN9pR4sT6vW8zA"
SLACK = "xoxb-1234567890123-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"
OPENAI = "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z"
AWS = "AKIAIOSFODNN7EXAMPLE"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"git clone https://{GHP}@github.com/x/y", f"git clone https://{REDACTED}@github.com/x/y"),
        (f"token {FINE_GRAINED} end", f"token {REDACTED} end"),
        (f"GITLAB={GLPAT}", f"GITLAB={REDACTED}"),
        (f"slack {SLACK}", f"slack {REDACTED}"),
        (f"key {OPENAI}.", f"key {REDACTED}."),
        (f"aws {AWS} x", f"aws {REDACTED} x"),
        ("curl -H 'Authorization: Bearer abc.def-123_xyz'", f"curl -H 'Authorization: Bearer {REDACTED}'"),
        ("password=hunter22 next", f"password={REDACTED} next"),
        ("export GITHUB_TOKEN='s3cr3t-value'", f"export GITHUB_TOKEN='{REDACTED}'"),
        ("--api-key=abcdef123 --x", f"--api-key={REDACTED} --x"),
        ("db_secret: tops3cret", f"db_secret: {REDACTED}"),
        ("https://alice:pa55word@host.example/path", f"https://alice:{REDACTED}@host.example/path"),
        ("postgres://u:p%40ss@db:5432/x", f"postgres://u:{REDACTED}@db:5432/x"),
        (
            "k=-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\nBBBB\n-----END OPENSSH PRIVATE KEY----- tail",
            f"k={REDACTED} tail",
        ),
    ],
)
def test_token_shaped_values_are_redacted(text: str, expected: str) -> None:
    assert redact_text(text) == expected
    assert has_secret(text)


DNA = "ACGTTGCAAGCTAGCTAGGATCCGATCGATCGTAGCTAGCTAGCTAGGCTAGCATCGATCGAT" * 4
PROTEIN = "MAKIAVLGAAGGIGQALALLLKTQLPSGSELSLYDIAPVTPGVAVDLSHIPTAVKIKGFSGEDATPALEG"


@pytest.mark.parametrize(
    "text",
    [
        DNA,
        DNA.lower(),
        PROTEIN,
        hashlib.sha256(b"x").hexdigest(),
        "sha256:" + hashlib.sha256(b"y").hexdigest(),
        "densegen/demo",
        "sk-lab/sk-densegen-demo-iteration-0001",
        "token_count=5 tokens=12 password_hint_shown",
        "usr push densegen/demo bu-scc -y --audit-json-out audit/push.json",
        "ssh://alice@scc1.bu.edu/projectnb/x",
        "export TOKEN=$GITHUB_TOKEN",
        "id=1f3a9c0e5b7d2468ace13579bdf02468ace13579bdf02468ace13579bdf0246",
        "/projectnb/lab/usr_datasets/AKIA_not_a_key/records.parquet",
    ],
)
def test_data_and_ids_are_not_redacted(text: str) -> None:
    assert redact_text(text) == text
    assert not has_secret(text)


def test_redact_walks_mappings_lists_and_values() -> None:
    args = {
        "notes": f"pulled with {GHP}",
        "api_token": "plain",
        "argv": ["usr", "--password", "x", "--note", "Bearer abcdefgh12345"],
        "rows": 3,
        "sequence": DNA,
    }
    out = redact(args)
    assert out == {
        "notes": f"pulled with {REDACTED}",
        "api_token": REDACTED,
        "argv": ["usr", "--password", REDACTED, "--note", f"Bearer {REDACTED}"],
        "rows": 3,
        "sequence": DNA,
    }


def test_init_notes_reach_meta_md_and_event_log_redacted(tmp_path) -> None:
    from usrbatch.dataset.meta import append_meta_note
    from usrbatch.dataset.records import init_dataset

    result = init_dataset(tmp_path, "densegen/demo", source="lab", notes=f"seeded with {GHP}")
    ds = result.dataset.dir
    append_meta_note(ds, f"attached with password={GLPAT}", command=f"curl -u x https://u:{GLPAT}@h/")
    written = (ds / "meta.md").read_text() + (ds / ".events.log").read_text()
    assert GHP not in written and GLPAT not in written
    assert f"notes: seeded with {REDACTED}" in written
    assert f"password={REDACTED}" in written and f"https://u:{REDACTED}@h/" in written
