"""A joint model's train and test steps, written once for every backend.

`backend.vjp` runs a forward pass and gives its linearization; the gradients
come from that one pass:

- `loss_step`: one gradient per routing group (`StepLosses.groups`): the
  terms that update every variable they reach, and each set of submodels
  named by joint losses' `updates=`. Most models have one group.
- `alternating_step` (`compile(alternate=...)`): the groups in turn, each
  with a forward pass of its own, after the earlier stages' updates.
- `gradient_step`: gradient-level weighting. The per-task gradients on the
  shared variables (or representation), the strategy's coefficients from
  their Gram matrix, then one gradient of the rest (see
  `joint_keras/_step/combine.py`).

A variable gets an update only where a term of the step reaches it: every
backend reports no gradient (`None`) for a variable the differentiated
terms do not depend on, and `joint_keras/_step/updates.py` decides which of the
others move (labels, schedules, a strategy's finite state).
"""

import functools

import keras
from keras import ops

from joint_keras import backend
from joint_keras._step import combine as _combine
from joint_keras._step import gates as _gates
from joint_keras._step import targets as _targets
from joint_keras._step import task_losses as _task_losses
from joint_keras._step import updates as _updates
from joint_keras._step import variables as _variables
from joint_keras._step.task_losses import EVERYTHING

# The forward pass's output holding the terms of group `()` that are not a
# submodel's own loss (`StepLosses.unflagged`): what they reach is not
# gated by labels.
UNFLAGGED = "unflagged"


def for_kind(kind):
    """The train step for a `CompileSpec.kind`."""
    steps = {"gradient": gradient_step, "alternating": alternating_step}
    return steps.get(kind, loss_step)


def loss_step(model, data):
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    optimizer = model.optimizer
    index = model._variable_index()

    def forward(probes):
        y_pred = model(x, training=True)
        losses = _task_losses.for_step(model, x, y, y_pred, sample_weight, True)
        outputs = {
            _output(key): optimizer.scale_loss(part)
            for key, part in losses.groups.items()
        }
        return _with_unflagged(outputs, losses), (losses, y_pred)

    _, (losses, y_pred), linear = backend.vjp(
        forward, index.variables, state=_state(model)
    )
    grads, routed = _group_gradients(model, index, linear, list(losses.groups))
    _apply(model, index, linear, grads, losses, routed)
    return _logs(model, losses, x, y, y_pred, sample_weight)


def alternating_step(model, data):
    """Routing groups updated in turn (`compile(alternate=...)`): each stage
    runs a fresh forward pass through the submodels the earlier stages
    updated, takes its group's gradient and applies it. Each group's losses
    are logged once, from its last stage."""
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    optimizer = model.optimizer
    index = model._variable_index()
    spec = model._spec
    last = {key: s for s, key in enumerate(spec.stages)}
    # Without terms that update everything, the other terms (regularization)
    # go with every stage, each reaching its own group's variables.
    others_everywhere = EVERYTHING not in spec.group_tasks
    for s, key in enumerate(spec.stages):
        track = spec.group_tasks[key] if last[key] == s else []

        def forward(probes, key=key, track=track):
            y_pred = model(x, training=True)
            losses = _task_losses.for_step(
                model, x, y, y_pred, sample_weight, True, track, spec.group_tasks[key]
            )
            loss = losses.groups.get(key, ops.zeros(()))
            if others_everywhere and key and EVERYTHING in losses.groups:
                loss = loss + losses.groups[EVERYTHING]
            outputs = {_output(key): optimizer.scale_loss(loss)}
            return _with_unflagged(outputs, losses), (losses, y_pred)

        _, (losses, y_pred), linear = backend.vjp(
            forward, index.variables, state=_state(model)
        )
        grads, routed = _group_gradients(model, index, linear, [key])
        _apply(model, index, linear, grads, losses, routed)
        logged = losses.only(track, spec.task_names, s == len(spec.stages) - 1)
        model._task_losses.total_tracker.update_state(
            logged, _targets.batch_size(y_pred)
        )
    return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


def gradient_step(model, data):
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    optimizer = model.optimizer
    index = model._variable_index()
    split = model._representation_split()
    probes = []
    if split is not None:
        probes = [ops.zeros(shape) for shape in split.probe_shapes(model, x)]
    elif not index.shared:
        raise ValueError(
            f"`weighting={model.weighting.name!r}` combines the tasks' "
            "gradients on the variables the submodels share, but these "
            f"submodels ({list(model.submodels)}) share none. Share a layer "
            "(a trunk) between them, or use a loss-level strategy."
        )

    def forward(probe_values):
        representations = []
        if split is None:
            y_pred = model(x, training=True)
        else:
            y_pred, representations = split.forward(model, x, probe_values, True)
        losses = _task_losses.for_step(model, x, y, y_pred, sample_weight, True)
        outputs = {
            "tasks": optimizer.scale_loss(losses.tasks),
            "total": optimizer.scale_loss(losses.total),
        }
        if representations:
            outputs["representation"] = representations[0]
        return _with_unflagged(outputs, losses), (losses, y_pred)

    outputs, (losses, y_pred), linear = backend.vjp(
        forward, index.variables, probes, state=_state(model)
    )
    vectorized = _combine.vectorized(
        model._task_losses.weighting.per_task_gradients,
        len(losses.indices),
        at_representation=split is not None,
    )
    if split is None:
        jacobians, _ = linear.jacobian("tasks", index.shared, vectorized)
    else:
        _, copies = linear.jacobian("tasks", [], vectorized)
        # Each split submodel's representation is the same: sum per task.
        jacobians = [sum(copies[1:], copies[0])]
    loss_scale = optimizer.scale_loss(ops.ones((), dtype="float32"))
    gram = _combine.gram_matrix(
        jacobians, len(losses.indices), loss_scale, per_replica_rows=bool(probes)
    )
    updates, b = model._task_losses.combine(
        gram, jacobians, losses, rows_per_replica=bool(probes)
    )
    # The gradient of `total + (b - 1) @ L`, plus `update - b @ J` on the
    # shared variables, or pushed back through the trunk from its output.
    corrections = [u - _combine.mix(b, j) for u, j in zip(updates, jacobians)]
    cotangents = {"tasks": ops.cast(b, outputs["tasks"].dtype) - 1.0, "total": 1.0}
    if split is not None:
        cotangents["representation"] = corrections[0]
    positions = list(range(len(index.variables)))
    grads = linear.pullback(cotangents, positions)[0]
    if split is None:
        for correction, i in zip(corrections, index.shared):
            grads[i] = correction if grads[i] is None else grads[i] + correction
    _apply(model, index, linear, grads, losses, set())
    return _logs(model, losses, x, y, y_pred, sample_weight)


def test_step(model, data):
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    y_pred = model(x, training=False)
    losses = _task_losses.for_step(model, x, y, y_pred, sample_weight, False)
    return _logs(model, losses, x, y, y_pred, sample_weight)


def _output(key):
    """The forward pass's output name of routing group `key` (names have no
    "/")."""
    return "group/" + "/".join(key)


def _with_unflagged(outputs, losses):
    """`outputs`, plus the terms whose reach decides the label gates, when
    some task may have no labelled row."""
    if losses.unflagged is None:
        return outputs
    return {**outputs, UNFLAGGED: losses.unflagged}


def _group_gradients(model, index, linear, keys):
    """Each variable's gradient: group `()` reaches every variable, a routed
    group (`updates=`) only its submodels'; a weighting strategy's own
    variables get every group's (the whole objective they weigh).

    Returns:
        `(grads, routed)`: the gradients (`None` where no term reaches), and
        the positions a routed group's terms reached (no label gates them).
    """
    _updates.check_groups(model._spec, index)  # Frozen since `compile()`?
    strategy = set(index.unowned)
    grads = [None] * len(index.variables)
    routed = set()
    for key in keys:
        if key == EVERYTHING:
            positions = list(range(len(grads)))
        else:
            positions = sorted(set(index.positions(key)) | strategy)
        group_grads, _ = linear.pullback({_output(key): 1.0}, positions)
        for p, grad in zip(positions, group_grads):
            if grad is None:
                continue
            grads[p] = grad if grads[p] is None else grads[p] + grad
            if key != EVERYTHING and p not in strategy:
                routed.add(p)
    return grads, routed


def _apply(model, index, linear, grads, losses, routed):
    """Applies the optimizer to `grads`, each variable (and its optimizer
    state) moving only where `_updates.gates` says."""
    connected = None
    if losses.unflagged is not None:
        connected = linear.connected(UNFLAGGED, range(len(index.variables)))
    gates = _updates.gates(model, index, grads, losses, connected, routed)
    _gates.apply_gated(model.optimizer, grads, index.variables, gates)


def _logs(model, losses, x, y, y_pred, sample_weight):
    model._task_losses.total_tracker.update_state(losses, _targets.batch_size(y_pred))
    return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


def _state(model):
    """Every variable of the step, when the backend asks (JAX)."""
    return functools.partial(_variables.step_state, model)
