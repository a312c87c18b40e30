"""docs/bu-scc/gpu-infer-loop.md, executed: every command of the page runs, in order, on the REAL SGE,
on a copy of examples/bu-scc-gpu-infer.yaml where only what needs the SCC is replaced (paths, project,
`module`, the DenseGen/Infer commands: see the page's "How this page is tested")."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from usrbatch.dataset.records import init_dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runbook import bash_commands  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "bu-scc" / "gpu-infer-loop.md"
EXAMPLE = REPO / "examples" / "bu-scc-gpu-infer.yaml"
SITE = "/projectnb/myproject"
STAND_INS = {
    "cd /projectnb/myproject/dnadesign": 'cd "$USRBATCH_LOOP_DIR"',
    "uv run python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else \"no CUDA device\")'": (
        'echo "torch check" >> "$USRBATCH_LOOP_DIR/setup.log"'
    ),
    'uv run infer validate config --config "$INFER_CONFIG"': 'echo "validate $INFER_CONFIG" >> "$USRBATCH_LOOP_DIR/setup.log"',
}


pytestmark = pytest.mark.usefixtures("bytecode_cache")


def _adapted_example(ws: Path) -> Path:
    site = ws / "projectnb"
    data = yaml.safe_load(EXAMPLE.read_text())
    data |= {
        "root": str(site / "usr_datasets"),
        "loops_dir": str(site / "usrbatch-loops"),
        "remotes_config": str(ws / "remotes.yaml"),
        "python": sys.executable,
        "project": "usrbatch",
    }
    dense, infer, _push = data["steps"]
    # all.q has 2 slots here: `-pe omp 4` would wait forever.
    dense["resources"]["cpus"] = infer["resources"]["cpus"] = 2
    dense["command"] = 'echo "dense run -c $DENSEGEN_CONFIG --no-plot $*" >> "$USRBATCH_LOOP_DIR/dense.log"'
    module = 'module() { echo "module $*" >> "$USRBATCH_LOOP_DIR/setup.log"; }'
    infer["setup"] = [module, *(STAND_INS.get(line, line) for line in infer["setup"])]
    infer["command"] = (
        'echo "$CC $CXX $CUDAHOSTCXX $OMP_NUM_THREADS $USR_ACTOR_TOOL $INFER_CONFIG" > "$USRBATCH_LOOP_DIR/infer.txt"'
    )
    init_dataset(site / "usr_datasets", data["dataset"])
    (ws / "cluster").mkdir()
    (ws / "remotes.yaml").write_text(
        yaml.safe_dump({"remotes": {"bu-scc": {"type": "local", "base_dir": str(ws / "cluster")}}})
    )
    path = ws / "examples" / "bu-scc-gpu-infer.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return site


def test_every_command_of_the_gpu_loop_page_runs_on_sge(sge, tmp_path: Path) -> None:
    site = _adapted_example(tmp_path)
    usrbatch = f"{shlex.quote(sys.executable)} -m usrbatch.cli.usrbatch_main"
    outputs = []
    commands = bash_commands(DOC)
    assert len(commands) == 5
    for command in commands:
        text = command.text.replace("uv run usrbatch", usrbatch).replace(SITE, str(site))
        proc = subprocess.run(["bash", "-c", text], cwd=tmp_path, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, (command.where(), proc.stdout[-3000:], proc.stderr[-3000:])
        outputs.append(proc.stdout)
    rendered = outputs[1]
    for line in (
        "#!/bin/bash -l",
        "#$ -S /bin/bash",
        "#$ -pe omp 2",
        "#$ -l mem_per_core=8G",
        "#$ -l gpus=1",
    ):
        assert line in rendered.splitlines(), line
    assert "#$ -l gpu_c=8.9" in rendered and "#$ -M me@bu.edu" in rendered
    assert "#$ -l gpus=1" in outputs[0] and "-hold_jid" in outputs[0]  # the dry-run shows the chain
    loop_dir = site / "usrbatch-loops" / "evo2-gpu"
    assert (loop_dir / "infer.txt").read_text().split() == [
        "gcc", "g++", "g++", "2", "infer", "/projectnb/myproject/infer/evo2_ll.yaml",
    ]  # fmt: skip
    assert (loop_dir / "setup.log").read_text().splitlines() == [
        "module purge",
        "module load cuda/12.5",
        "module load gcc/12.2.0",
        "torch check",
        "validate /projectnb/myproject/infer/evo2_ll.yaml",
    ]
    state = yaml.safe_load((loop_dir / "state.json").read_text())
    infer_id = next(j["scheduler_id"] for j in state["jobs"] if j["step"] == "infer-gpu")
    record = subprocess.run(["qacct", "-j", infer_id], capture_output=True, text=True, check=True).stdout
    category = next(line for line in record.splitlines() if line.startswith("category"))
    assert "gpus=1" in category and "gpu_c=8.9" in category and "omp 2" in category
    assert (tmp_path / "cluster" / "densegen" / "my_dataset" / "records.parquet").is_file()  # pushed
