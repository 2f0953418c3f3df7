"""Which variables a step's update moves, decided from the step's structure.

A variable that no differentiated term of the step reaches gets no gradient
(`None`, on every backend) and no update. Of the others, some move only
where a flag (a boolean tensor) holds, as `gates` returns them:

- Labels: a variable that only the losses of submodels whose batch may have
  no labelled row reach (missing labels) moves only if one of them has one.
  A variable that any other term reaches (a fully labelled submodel's loss,
  a joint loss, a regularization loss, a routed group) moves.
- Schedules (`update_every`): a variable moves on the steps when the
  submodel that owns it (the first of its owners with an optimizer) is due.
- A weighting strategy's own variables (Uncertainty's log-variances): each
  task's entry moves only when that task has a loss in the step, and none
  moves in a step whose losses are not finite.

A variable that does not move keeps its optimizer state too
(`joint_keras/_step/gates.py`).
"""

from keras import ops

from joint_keras._step.gates import any_of
from joint_keras.submodel_optimizer import schedule_flags


def gates(model, index, grads, losses, connected, routed):
    """`{position: flag}` for the variables of `index` that move only where
    `flag` holds.

    Args:
        model: The `JointModel`.
        index: Its `VariableIndex`.
        grads: The step's gradients, aligned with `index.variables`.
        losses: The step's `StepLosses`.
        connected: List of booleans aligned with `index.variables`, whether
            `losses.unflagged` reaches each, or `None` when it is `None`.
        routed: Set of the positions a routed group's terms reached.
    """
    result = {}
    for found in (
        _label_gates(model, index, grads, losses, connected, routed),
        _schedule_gates(model.optimizer, index),
        _strategy_gates(model._task_losses.weighting, index, losses),
    ):
        for position, flag in found.items():
            if position in result:
                flag = ops.logical_and(result[position], flag)
            result[position] = flag
    return {p: flag for p, flag in result.items() if grads[p] is not None}


def _label_gates(model, index, grads, losses, connected, routed):
    if not losses.flagged:
        return {}
    spec = model._spec
    names = [spec.task_names[k] for k in losses.indices]
    labelled = [
        name
        for i, name in enumerate(names)
        if i not in losses.flagged and name in spec.names
    ]
    ungated = set(index.reached_by(labelled)) | set(routed) | set(index.unowned)
    reach = {i: set(index.reached_by([names[i]])) for i in losses.flagged}
    result = {}
    for p, grad in enumerate(grads):
        if grad is None or p in ungated or (connected and connected[p]):
            continue
        flags = [losses.present[i] for i in losses.flagged if p in reach[i]]
        if flags:
            result[p] = any_of(flags)
    return result


def _schedule_gates(optimizer, index):
    flags_of = schedule_flags(optimizer)
    if flags_of is None:
        return {}
    flags, owner_of = flags_of
    result = {}
    for p, variable in enumerate(index.variables):
        owner = owner_of(variable)
        if owner in flags:
            result[p] = flags[owner]
    return result


def _strategy_gates(weighting, index, losses):
    variables = weighting.trainable_variables
    if not variables or not losses.indices:
        return {}
    num_tasks = len(weighting.task_names)
    selection = ops.one_hot(ops.array(losses.indices), num_tasks, dtype="float32")
    present = ops.ones((len(losses.indices),), "float32")
    if losses.present is not None:
        present = ops.cast(losses.present, "float32")
    in_step = ops.greater(ops.matmul(present, selection), 0.0)
    finite = ops.all(ops.isfinite(losses.raw))
    result = {}
    for variable in variables:
        p = index.position[id(variable)]
        per_task = tuple(variable.shape) == (num_tasks,)
        result[p] = ops.logical_and(in_step if per_task else ops.any(in_step), finite)
    return result


def check_layout(spec, model):
    """Raises for a compiled layout that would silently train nothing: a
    routing group (`updates=`, an `alternate` stage) of frozen or weightless
    submodels, or a `representation` that no other task reads."""
    if all(m.built for m in model.submodels.values()):
        check_groups(spec, model._variable_index())
    name = spec.weighting.representation
    if name in model.submodels and not any(
        name in model._graph.ancestors(n) for n in model.submodels
    ):
        raise ValueError(
            f"`representation={name!r}` names a submodel whose output no other "
            "submodel reads (`inputs=`), so no other task's gradient passes "
            "through it and there is nothing to combine there. Name a trunk "
            "that the task heads read."
        )


def check_groups(spec, index):
    """Raises unless every routing group (`updates=`) can move a variable."""
    for key, tasks in spec.group_tasks.items():
        if key and not index.positions(key):
            where = f"`alternate` stage {list(key)}" if spec.stages else "`updates`"
            raise ValueError(
                f"{where} of the joint losses {tasks} names only submodels "
                f"without trainable variables ({list(key)}: frozen, or with no "
                "weights): it would train nothing. Unfreeze them, or route "
                "these losses to submodels that train."
            )
