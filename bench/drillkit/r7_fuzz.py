"""R7 fuzzed input (hypothesis): files for `usr import` (csv, jsonl, fasta, parquet) and `usr attach`
(csv, jsonl, parquet), remotes.yaml (`usr remotes list/show`) and loop YAML (`usrbatch submit-loop
--dry-run`), each through the real CLI in this process.

Per example:
  failed     a traceback, or a failing command that changed something on disk
  corrupted  a command succeeded and the dataset then fails `usr validate`
  converged  the rest: success with a valid dataset, or a clean refusal that changed nothing
Examples are drawn with a fixed hypothesis seed (the drill seed) and never shrunk; a failing
example's input is quoted in the detail.
"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hseed
from hypothesis import strategies as st

from . import datasets
from .verdict import RunResult, tree, validate
from .world import DS, NAMESPACE, CliRun, World

NAME = "R7"
TITLE = "fuzzed input (hypothesis): import, attach, remotes.yaml, loop YAML"
DEFAULT_RUNS = 200

BASES = "ACGTNacgtnU-* "
dna = st.text(alphabet="ACGT", min_size=1, max_size=80)
messy = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",))
    | st.sampled_from(BASES + ",;\t\"'\n\r\x00\x1b\ufeff"),
    max_size=60,
)
cell = st.one_of(dna, messy, st.integers(), st.floats(allow_nan=True), st.none(), st.booleans())
columns = st.lists(
    st.sampled_from(["sequence", "id", "bio_type", "alphabet", "source", "score", "rank", "", "séquence"])
    | messy,
    min_size=1,
    max_size=5,
)


def _encode(text: str, enc: str) -> bytes:
    return text.encode(enc, errors="replace")


@st.composite
def csv_bytes(draw, key: str = "sequence") -> bytes:
    """Mostly near-valid CSV (a key column of DNA, odd cells), sometimes raw bytes or odd shapes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=400))
    cols = draw(columns)
    if draw(st.integers(0, 3)):
        cols = [key, *(c for c in cols if c != key)]
    rows = []
    for _ in range(draw(st.integers(0, 8))):
        if draw(st.integers(0, 3)) and cols[0] == key:
            rows.append([draw(dna), *draw(st.lists(cell, min_size=len(cols) - 1, max_size=len(cols) - 1))])
        else:
            rows.append(draw(st.lists(cell, min_size=0, max_size=len(cols) + 1)))
    sep = draw(st.sampled_from([",", ",", ",", ";", "\t"]))
    lines = [sep.join(cols)] + [sep.join("" if v is None else str(v) for v in row) for row in rows]
    text = (
        draw(st.sampled_from(["", "", "\ufeff"]))
        + "\n".join(lines)
        + draw(st.sampled_from(["", "\n", "\r\n"]))
    )
    return _encode(text, draw(st.sampled_from(["utf-8"] * 6 + ["latin-1", "utf-16"])))


@st.composite
def jsonl_bytes(draw, key: str = "sequence") -> bytes:
    """Mostly objects with a DNA key and odd values; sometimes junk lines, arrays or raw bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=400))
    lines = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.integers(0, 9))
        if kind == 0:
            lines.append(draw(messy))
            continue
        obj = draw(
            st.dictionaries(st.sampled_from(["id", "score", "rank", "bio_type"]) | messy, cell, max_size=3)
        )
        if kind > 2:
            obj[key] = draw(dna)
        lines.append(json.dumps([obj]) if kind == 1 else json.dumps(obj, allow_nan=True))
    return ("\n".join(lines) + draw(st.sampled_from(["", "\n"]))).encode()


@st.composite
def fasta_bytes(draw) -> bytes:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=400))
    parts = [draw(st.sampled_from(["", "\ufeff"]))]
    for _ in range(draw(st.integers(0, 5))):
        parts.append(draw(st.sampled_from([">", ">", "", ";"])) + draw(messy).replace("\n", " ") + "\n")
        for _ in range(draw(st.integers(0, 3))):
            parts.append(draw(dna | messy) + draw(st.sampled_from(["\n", "\r\n", ""])))
    return "".join(parts).encode("utf-8", errors="replace")


@st.composite
def parquet_bytes(draw, key: str = "sequence") -> bytes:
    if draw(st.integers(0, 7)) == 0:
        return draw(st.binary(max_size=400))
    n = draw(st.integers(0, 6))
    names = list(dict.fromkeys(draw(columns) + ([key] if draw(st.booleans()) else [])))
    data = {}
    for name in names:
        kind = draw(st.integers(0, 4))
        if kind == 0:
            data[name] = pa.array(draw(st.lists(dna, min_size=n, max_size=n)))
        elif kind == 1:
            data[name] = pa.array(draw(st.lists(st.integers(-(2**40), 2**40), min_size=n, max_size=n)))
        elif kind == 2:
            data[name] = pa.array(
                draw(st.lists(st.floats(allow_nan=True) | st.none(), min_size=n, max_size=n))
            )
        elif kind == 3:
            data[name] = pa.array(draw(st.lists(st.binary(max_size=8), min_size=n, max_size=n)))
        else:
            data[name] = pa.array(draw(st.lists(messy | st.none(), min_size=n, max_size=n)))
    buf = io.BytesIO()
    pq.write_table(pa.table(data) if data else pa.table({"x": pa.array([], pa.int8())}), buf)
    return buf.getvalue()


names_yaml = (
    st.sampled_from(
        ["remotes", "hpc", "type", "host", "user", "base_dir", "port", "ssh_key_env", "batch_mode"]
    )
    | messy
)
yaml_value = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | messy
    | st.sampled_from(["ssh", "local", "127.0.0.1"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(names_yaml, inner, max_size=4),
    max_leaves=12,
)


@st.composite
def remotes_yaml(draw) -> bytes:
    if draw(st.integers(0, 5)) == 0:
        return draw(st.binary(max_size=300))
    if draw(st.booleans()):
        remote = draw(st.dictionaries(names_yaml, yaml_value, max_size=6))
        body = {"remotes": {draw(st.sampled_from(["hpc", "x"]) | messy): remote}}
    else:
        body = draw(yaml_value)
    return yaml.safe_dump(body, allow_unicode=True).encode()


LOOP_BASE = {
    "name": "fuzz",
    "dataset": DS,
    "root": "local",
    "remote": "shared",
    "scheduler": "local",
    "iterations": 1,
    "resources": {"time": "00:05:00", "cpus": 1},
    "steps": [{"kind": "shell", "name": "work", "command": "true"}, {"kind": "sync", "action": "push"}],
}
loop_keys = st.sampled_from(
    [
        "name",
        "dataset",
        "root",
        "remote",
        "scheduler",
        "iterations",
        "resources",
        "steps",
        "project",
        "python",
        "workdir",
        "templates_dir",
    ]
)
step_keys = st.sampled_from(
    ["kind", "name", "command", "action", "retries", "retry_delay", "resources", "tfbs", "count"]
)


@st.composite
def loop_yaml(draw) -> bytes:
    if draw(st.integers(0, 7)) == 0:
        return draw(st.binary(max_size=300))
    spec = json.loads(json.dumps(LOOP_BASE))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.integers(0, 3))
        if op == 0:
            spec.pop(draw(loop_keys), None)
        elif op == 1:
            spec[draw(loop_keys | messy)] = draw(yaml_value)
        elif op == 2 and spec.get("steps") and isinstance(spec["steps"], list):
            step = spec["steps"][draw(st.integers(0, len(spec["steps"]) - 1))]
            if isinstance(step, dict):
                step[draw(step_keys | messy)] = draw(yaml_value)
        else:
            spec["resources"] = draw(yaml_value)
    return yaml.safe_dump(spec, allow_unicode=True).encode()


# -- the targets ----------------------------------------------------------------------------


def _dataset_target(fmt: str, strategy, mode: str) -> Callable:
    def one(w: World, work: Path, data: bytes) -> tuple[str, str]:
        local = work / "local"
        ds = local / DS
        if not ds.exists():
            datasets.place(w, "base", local)
        path = work / "inputs" / f"in.{fmt}"
        path.write_bytes(data)
        before = tree(ds)
        if mode == "import":
            run = w.usr(local, "import", DS, "--from", fmt, "--path", str(path))
        else:
            run = w.usr(
                local,
                "attach",
                DS,
                "--path",
                str(path),
                "--namespace",
                NAMESPACE,
                "--key",
                "sequence",
                "--allow-missing",
            )
        return _verdict(w, run, local, lambda: tree(ds) == before)

    return one


def _verdict(w: World, run: CliRun, local: Path, unchanged: Callable[[], bool]) -> tuple[str, str]:
    if run.crash:
        return "failed", f"traceback: {run.crash.strip().splitlines()[-1][:200]}"
    if run.ok:
        check = validate(w, local)
        if not check.ok:
            return "corrupted", f"succeeded, then validate fails: {check.brief()[:200]}"
        shutil.rmtree(local / DS)  # next example starts from the template again
        return "converged", "accepted"
    if not unchanged():
        check = validate(w, local)
        shutil.rmtree(local / DS)
        if not check.ok:
            return "corrupted", f"a failure left a dataset that fails validate: {run.brief()[:200]}"
        return "failed", f"a failure changed the dataset: {run.brief()[:200]}"
    return "converged", "refused: " + run.brief()[:100]


def _remotes_target(w: World, work: Path, data: bytes) -> tuple[str, str]:
    cfg = work / "inputs" / "remotes.yaml"
    cfg.write_bytes(data)
    cfg.chmod(0o600)
    for args in (["remotes", "list"], ["remotes", "show", "hpc"]):
        run = w.usr(work / "local", "--remotes-config", str(cfg), *args)
        if run.crash:
            return "failed", f"`usr {' '.join(args)}` traceback: {run.crash.strip().splitlines()[-1][:200]}"
        if cfg.read_bytes() != data:
            return "failed", f"`usr {' '.join(args)}` changed remotes.yaml"
    return "converged", ""


def _loop_target(w: World, work: Path, data: bytes) -> tuple[str, str]:
    spec = work / "loop.yaml"
    spec.write_bytes(data)
    before = sorted(p.relative_to(work).as_posix() for p in work.rglob("*"))
    run = w.usrbatch("submit-loop", str(spec), "--dry-run")
    if run.crash:
        return "failed", f"traceback: {run.crash.strip().splitlines()[-1][:200]}"
    after = sorted(p.relative_to(work).as_posix() for p in work.rglob("*"))
    if after != before:
        return "failed", f"a dry run wrote {sorted(set(after) - set(before))[:4]}"
    return "converged", ""


TARGETS: list[tuple[str, object, Callable, int]] = [
    ("import csv", csv_bytes(), _dataset_target("csv", None, "import"), 3),
    ("import jsonl", jsonl_bytes(), _dataset_target("jsonl", None, "import"), 3),
    ("import fasta", fasta_bytes(), _dataset_target("fasta", None, "import"), 3),
    ("import parquet", parquet_bytes(), _dataset_target("parquet", None, "import"), 3),
    ("attach csv", csv_bytes(), _dataset_target("csv", None, "attach"), 2),
    ("attach jsonl", jsonl_bytes(), _dataset_target("jsonl", None, "attach"), 2),
    ("attach parquet", parquet_bytes(), _dataset_target("parquet", None, "attach"), 2),
    ("remotes.yaml", remotes_yaml(), _remotes_target, 1),
    ("loop YAML", loop_yaml(), _loop_target, 1),
]


def _share(runs: int) -> list[int]:
    total = sum(t[3] for t in TARGETS)
    counts = [max(1, runs * t[3] // total) for t in TARGETS]
    return counts


def run(w: World, seed: int, runs: int, only: int | None = None, repro: str = "") -> list[RunResult]:
    out: list[RunResult] = []
    index = 0
    for (label, strategy, target, _weight), count in zip(TARGETS, _share(runs), strict=True):
        first = index
        index += count
        if only is not None and not first <= only < index:
            continue
        local, _remote = w.fresh(f"r7-{label.replace(' ', '-')}")
        work = local.parent
        (work / "inputs").mkdir()
        results: list[tuple[str, str, bytes]] = []
        _run_examples(w, seed, strategy, target, work, results, count)
        for k, (outcome, detail, data) in enumerate(results[:count]):
            if outcome == "converged":
                out.append(RunResult(NAME, first + k, f"{label} example {k}: {detail}", outcome, "", repro))
            else:
                shown = f"{detail}; input {data[:160]!r}"
                out.append(RunResult(NAME, first + k, f"{label} example {k}", outcome, shown, repro))
    return out


def _run_examples(
    w: World, seed: int, strategy, target: Callable, work: Path, results: list, count: int
) -> None:
    """`count` hypothesis examples of `strategy` through `target`; outcomes appended to results."""

    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @hseed(seed)
    @given(data=strategy)
    def body(data: bytes) -> None:
        try:
            outcome, detail = target(w, work, data)
        except Exception as exc:  # noqa: BLE001 - a harness crash is a failed run, reported
            outcome, detail = "failed", f"harness error: {exc!r}"
        results.append((outcome, detail, data))

    body()
