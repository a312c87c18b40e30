"""Event-log revisions and prefix proofs (§7.3, §7.4) on real files."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from usrbatch.dataset.event_revision import (
    RECORD_LIMIT,
    EventHistoryError,
    EventRevision,
    capture_validated_revision,
    prove_pull_extends,
    prove_push_prefix,
)
from usrbatch.errors import VerificationError


def line(action: str, **kw) -> bytes:
    return json.dumps({"action": action, **kw}, separators=(",", ":")).encode() + b"\n"


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_absent_log(tmp_path):
    rev = capture_validated_revision(tmp_path / ".events.log")
    assert rev == EventRevision(exists=False)


def test_valid_log_revision(tmp_path):
    data = line("init") + line("import_rows", note="naïve ✓")
    p = write(tmp_path / ".events.log", data)
    rev = capture_validated_revision(p)
    st = p.stat()
    assert rev == EventRevision(True, len(data), hashlib.sha256(data).hexdigest(), 2, st.st_dev, st.st_ino)


def test_record_exactly_at_limit_is_accepted_and_one_more_is_not(tmp_path):
    def record(total: int) -> bytes:
        head = b'{"a":"'
        tail = b'"}\n'
        return head + b"x" * (total - len(head) - len(tail)) + tail

    ok = write(tmp_path / "ok.log", record(RECORD_LIMIT))
    assert capture_validated_revision(ok).lines == 1
    big = write(tmp_path / "big.log", line("init") + record(RECORD_LIMIT + 1))
    with pytest.raises(
        VerificationError, match=r"^Event log record 2 exceeds the 1048576-byte encoded-record limit: "
    ):
        capture_validated_revision(big)
    tail = write(tmp_path / "tail.log", b"x" * RECORD_LIMIT)
    with pytest.raises(VerificationError, match="record 1 exceeds"):
        capture_validated_revision(tail)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (line("a") + b"\n", "Event log contains a blank JSONL record at line 2"),
        (line("a") + b"\xff\xfe\n", "Event log is not valid UTF-8 at line 2"),
        (b"{not json}\n", "Event log contains malformed JSON at line 1"),
        (line("a") + b"[1,2]\n", "Event log record 2 is not a JSON object"),
        (line("a") + b'{"partial":', "Event log ends with a partial JSONL record"),
    ],
)
def test_invalid_logs(tmp_path, data, message):
    p = write(tmp_path / ".events.log", data)
    with pytest.raises(VerificationError) as info:
        capture_validated_revision(p)
    assert str(info.value) == message


def test_symlink_and_directory_are_not_one_regular_file(tmp_path):
    real = write(tmp_path / "real.log", line("a"))
    link = tmp_path / ".events.log"
    os.symlink(real, link)
    with pytest.raises(VerificationError, match=r"^Event log must be one regular file: "):
        capture_validated_revision(link)
    d = tmp_path / "dir"
    d.mkdir()
    (d / ".events.log").mkdir()
    with pytest.raises(VerificationError, match="must be one regular file"):
        capture_validated_revision(d / ".events.log")


def revs(tmp_path, local: bytes, remote: bytes | None):
    lp = write(tmp_path / "local.log", local)
    rp = None
    if remote is not None:
        rp = write(tmp_path / "remote.log", remote)
    lrev = capture_validated_revision(lp)
    rrev = capture_validated_revision(rp) if rp else EventRevision(False)
    return lp, lrev, rrev, rp


def test_push_prefix_accepts_prefix_equal_and_absent(tmp_path):
    base = line("a") + line("b")
    lp, lrev, rrev, _ = revs(tmp_path, base + line("c"), base)
    prove_push_prefix(lp, lrev, rrev)
    lp, lrev, rrev, _ = revs(tmp_path, base, base)
    prove_push_prefix(lp, lrev, rrev)
    lp, lrev, _, _ = revs(tmp_path, base, None)
    prove_push_prefix(lp, lrev, EventRevision(False))


@pytest.mark.parametrize(
    "case",
    ["same-size-divergent", "remote-ahead", "truncated-prefix", "branched", "local-absent"],
)
def test_push_prefix_rejections(tmp_path, case):
    base = line("a") + line("b")
    local, remote = {
        "same-size-divergent": (base + line("x"), base + line("y")),
        "remote-ahead": (base, base + line("c")),
        "truncated-prefix": (base + line("c"), base[:-3]),
        "branched": (base + line("local"), base + line("remote!")),
        "local-absent": (None, base),
    }[case]
    if local is None:
        lrev = EventRevision(False)
        lp = tmp_path / "missing.log"
        rrev = capture_validated_revision(write(tmp_path / "r.log", remote))
    else:
        lp = write(tmp_path / "l.log", local)
        lrev = capture_validated_revision(lp)
        rp = write(tmp_path / "r.log", remote)
        rrev = EventRevision(True, len(remote), hashlib.sha256(remote).hexdigest(), remote.count(b"\n"))
        del rp
    with pytest.raises(
        VerificationError, match="^Remote event log is not a prefix of the locked local event log"
    ):
        prove_push_prefix(lp, lrev, rrev)


def test_push_prefix_partial_line(tmp_path):
    local = line("abc") + line("def")
    cut = local[:5]
    lp = write(tmp_path / "l.log", local)
    rrev = EventRevision(True, len(cut), hashlib.sha256(cut).hexdigest(), 0)
    with pytest.raises(VerificationError) as info:
        prove_push_prefix(lp, capture_validated_revision(lp), rrev)
    assert str(info.value) == "Remote event log is not a prefix of the locked local event log: partial line"


def test_pull_extends(tmp_path):
    base = line("a") + line("b")
    staged = write(tmp_path / "staged.log", base + line("c"))
    local = capture_validated_revision(write(tmp_path / "l.log", base))
    assert prove_pull_extends(local, staged).lines == 3
    assert prove_pull_extends(EventRevision(False), staged).exists
    equal = write(tmp_path / "eq.log", base)
    assert prove_pull_extends(local, equal).sha256 == local.sha256


@pytest.mark.parametrize("case", ["branched", "equal-length-divergent", "shorter", "absent"])
def test_pull_extends_rejections(tmp_path, case):
    base = line("a") + line("b")
    local = capture_validated_revision(write(tmp_path / "l.log", base + line("local")))
    staged_path = tmp_path / "staged.log"
    if case != "absent":
        write(
            staged_path,
            {
                "branched": base + line("remote") + line("more"),
                "equal-length-divergent": base + line("lucal"),
                "shorter": base,
            }[case],
        )
    with pytest.raises(VerificationError) as info:
        prove_pull_extends(local, staged_path)
    assert str(info.value) == "Remote event log does not extend the local event history"


def test_staged_log_must_be_valid(tmp_path):
    local = capture_validated_revision(write(tmp_path / "l.log", line("a")))
    staged = write(tmp_path / "s.log", line("a") + b"garbage\n")
    with pytest.raises(VerificationError, match="malformed JSON at line 2"):
        prove_pull_extends(local, staged)


def test_push_refusals_say_which_side_is_ahead_and_what_to_run(tmp_path):
    base = line("a") + line("b")
    lp = write(tmp_path / "l.log", base)
    ahead = base + line("c")
    rrev = EventRevision(True, len(ahead), hashlib.sha256(ahead).hexdigest(), 3)
    with pytest.raises(EventHistoryError) as info:
        prove_push_prefix(lp, capture_validated_revision(lp), rrev)
    assert info.value.kind == "remote-ahead"
    assert info.value.advice("ns/demo", "hpc").startswith(
        "The remote has 3 event(s), local 2: the remote holds events this copy lacks. "
        "Pull first (`usr pull ns/demo hpc`), then push."
    )
    other = line("x") + line("y")
    rrev = EventRevision(True, len(other), hashlib.sha256(other).hexdigest(), 2)
    with pytest.raises(EventHistoryError) as info:
        prove_push_prefix(lp, capture_validated_revision(lp), rrev)
    assert "the histories diverged" in (info.value.hint or "")
    assert "never merges" in (info.value.hint or "")


@pytest.mark.parametrize(
    ("staged", "kind", "hint"),
    [
        (line("a"), "local-ahead", "Local has 2 event(s) the remote lacks: push first (`usr push ds r`)"),
        (
            line("a") + line("remote") + line("more") + line("most"),
            "diverged",
            "Local has 2 event(s) the remote lacks and the remote has 3 the local lacks: the histories diverged.",
        ),
    ],
)
def test_pull_refusals_count_the_events_each_side_lacks(tmp_path, staged, kind, hint):
    lp = write(tmp_path / "l.log", line("a") + line("b") + line("local"))
    sp = write(tmp_path / "staged.log", staged)
    with pytest.raises(EventHistoryError) as info:
        prove_pull_extends(capture_validated_revision(lp), sp, local_path=lp)
    assert str(info.value) == "Remote event log does not extend the local event history"
    assert info.value.kind == kind
    assert info.value.advice("ds", "r").startswith(hint)


def test_a_partial_last_record_names_the_truncate_fix(tmp_path):
    complete = line("a") + line("b")
    path = write(tmp_path / "l.log", complete + b'{"act')
    with pytest.raises(VerificationError) as info:
        capture_validated_revision(path)
    assert str(info.value) == "Event log ends with a partial JSONL record"  # the public text
    assert f"`truncate -s {len(complete)} {path}`" in (info.value.hint or "")
