"""The shipped loop specs validate, and docs/bu-scc/jobs/*.qsub are exactly what the templates render."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from usrbatch.cli.usrbatch_main import main
from usrbatch.jobs.loop import load_spec

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_specs_validate(path: Path) -> None:
    spec = load_spec(path)
    assert spec.steps and spec.iterations >= 1


@pytest.mark.parametrize("step", ["densegen-cpu", "sync-push", "infer-cpu", "sync-pull"])
def test_bu_scc_job_scripts_are_rendered_from_the_templates(step: str, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["render", step, "--config", str(REPO / "examples" / "bu-scc-jobs.yaml")])
    assert info.value.code == 0
    rendered = capsys.readouterr().out
    doc = REPO / "docs" / "bu-scc" / "jobs" / f"{step}.qsub"
    assert rendered == doc.read_text(), f"regenerate {doc.name} (see docs/bu-scc/jobs/README.md)"
    assert subprocess.run(["bash", "-n", str(doc)]).returncode == 0


def test_render_unknown_step_names_the_choices(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["render", "densegen", "--config", str(REPO / "examples" / "bu-scc-jobs.yaml")])
    assert info.value.code == 2
    assert (
        "no step named 'densegen' (steps: sync-pull, densegen-cpu, infer-cpu, sync-push)"
        in capsys.readouterr().out
    )
