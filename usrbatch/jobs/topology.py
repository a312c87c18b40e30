"""Step orders that must fail, refused before anything is submitted (docs/loops.md, "Topologies").

A loop's jobs all write one local root. `usr pull` only fast-forwards: it refuses when the local
event log has lines the remote lacks ("Remote event log does not extend the local event history").
So a pull that follows a step writing the root, with no push in between, must fail, and the chain
stops there. `check_step_order` walks the steps in run order (across the iteration boundary when
the loop has more than one iteration) and raises a SpecError naming both steps and the fix.
"""

from __future__ import annotations

from usrbatch.jobs.loop import LoopSpec, SpecError, StepSpec


def _label(spec: LoopSpec, step: StepSpec) -> str:
    index = spec.steps.index(step)
    what = f"sync {step.args['action']}" if step.kind == "sync" else step.kind
    return f"'{step.name}' (steps[{index}], {what})"


def check_step_order(spec: LoopSpec, iterations: int) -> None:
    """SpecError when a `sync pull` runs after a step that wrote the root and no push came between."""
    dirty: StepSpec | None = None  # the last step that wrote the root since the last push
    passes = 2 if iterations > 1 else 1
    for lap in range(passes):
        for step in spec.steps:
            if step.kind == "sync" and step.args["action"] == "push":
                dirty = None
            elif step.kind == "sync" and step.args["action"] == "pull" and dirty is not None:
                when = (
                    f"in iteration 2 it runs after {_label(spec, dirty)} of iteration 1"
                    if lap == 1 and spec.steps.index(dirty) >= spec.steps.index(step)
                    else f"it runs after {_label(spec, dirty)}"
                )
                first = next(s for s in spec.steps if s.writes)
                raise SpecError(
                    f"{spec.path.name}: steps: {_label(spec, step)} must fail: {when}, which writes "
                    f"{spec.root} with no sync push in between, and a pull refuses a remote that does "
                    "not extend the local event history, so the chain would stop there",
                    hint=(
                        f"Add `- {{kind: sync, action: push}}` after '{dirty.name}' (write here, push "
                        f"there), or move the pull before '{first.name}' and end the iteration with a "
                        "push (pull, compute, push); if that step does not write this root, mark it "
                        "`writes: false`. See docs/loops.md."
                    ),
                )
            elif step.writes:
                dirty = step
