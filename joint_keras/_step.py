"""A joint model's train and test steps, written once for every backend.

One forward pass per step. `backend.vjp` runs it and gives its
linearization; the gradients come from that one pass:

- `loss_step`: one gradient per routing group (`StepLosses.groups`): the
  terms that update every variable they reach, and each set of submodels
  named by joint losses' `updates=`. Most models have one group.
- `gradient_step`: gradient-level weighting. The per-task gradients on the
  shared variables (or representation) in one vectorized pass, the
  strategy's coefficients from their Gram matrix, then one gradient of the
  rest (see `joint_keras/_combine.py`).

Both then apply the optimizer (a submodel with no labelled row in the batch
keeps its variables and their optimizer state) and update the logs.
"""

import functools

import keras
from keras import ops

from joint_keras import _combine
from joint_keras import _gates
from joint_keras import _targets
from joint_keras import _task_losses
from joint_keras import _variables
from joint_keras import backend
from joint_keras._task_losses import EVERYTHING


def for_kind(kind):
    """The train step for a `CompileSpec.kind`."""
    steps = {"gradient": gradient_step, "alternating": alternating_step}
    return steps.get(kind, loss_step)


def loss_step(model, data):
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    optimizer = model.optimizer
    index = model._variable_index()
    unreached = unreached_positions(model, index, y)

    def forward(probes):
        y_pred = model(x, training=True)
        losses = _task_losses.for_step(model, x, y, y_pred, sample_weight, True)
        scaled = {key: optimizer.scale_loss(v) for key, v in losses.groups.items()}
        return scaled, (losses, y_pred)

    outputs, (losses, y_pred), linear = backend.vjp(
        forward, index.variables, state=_state(model)
    )
    grads = [None] * len(index.variables)
    for key in outputs:
        if key == EVERYTHING:
            positions = [i for i in range(len(grads)) if i not in unreached]
        else:
            positions = index.positions(key)
        group_grads, _ = linear.pullback({key: 1.0}, positions)
        for i, grad in zip(positions, group_grads):
            if grad is not None:
                grads[i] = grad if grads[i] is None else grads[i] + grad
    return _finish(model, index, grads, losses, x, y, y_pred, sample_weight)


def alternating_step(model, data):
    """Routing groups updated in turn (`compile(alternate=...)`): each stage
    runs a fresh forward pass through the submodels the earlier stages
    updated, takes its group's gradient and applies it. Each group's losses
    are logged once, from its last stage."""
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    optimizer = model.optimizer
    index = model._variable_index()
    spec = model._spec
    unreached = unreached_positions(model, index, y)
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
            return {key: optimizer.scale_loss(loss)}, (losses, y_pred)

        _, (losses, y_pred), linear = backend.vjp(
            forward, index.variables, state=_state(model)
        )
        if key == EVERYTHING:
            positions = [i for i in range(len(index.variables)) if i not in unreached]
        else:
            positions = index.positions(key)
        grads = [None] * len(index.variables)
        for i, grad in zip(positions, linear.pullback({key: 1.0}, positions)[0]):
            grads[i] = grad
        gates = label_gates(model, index, y, losses)
        _gates.apply_gated(optimizer, grads, index.variables, gates)
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
        return outputs, (losses, y_pred)

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
    unreached = unreached_positions(model, index, y)
    positions = [i for i in range(len(index.variables)) if i not in unreached]
    grads = [None] * len(index.variables)
    for i, grad in zip(positions, linear.pullback(cotangents, positions)[0]):
        grads[i] = grad
    if split is None:
        for correction, i in zip(corrections, index.shared):
            grads[i] = correction if grads[i] is None else grads[i] + correction
    return _finish(model, index, grads, losses, x, y, y_pred, sample_weight)


def test_step(model, data):
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    y_pred = model(x, training=False)
    losses = _task_losses.for_step(model, x, y, y_pred, sample_weight, False)
    return _logs(model, losses, x, y, y_pred, sample_weight)


def _finish(model, index, grads, losses, x, y, y_pred, sample_weight):
    gates = label_gates(model, index, y, losses)
    _gates.apply_gated(model.optimizer, grads, index.variables, gates)
    return _logs(model, losses, x, y, y_pred, sample_weight)


def _logs(model, losses, x, y, y_pred, sample_weight):
    model._task_losses.total_tracker.update_state(losses, _targets.batch_size(y_pred))
    return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


def _state(model):
    """Every variable of the step, when the backend asks (JAX)."""
    return functools.partial(_variables.step_state, model)


def unreached_positions(model, index, y):
    """Positions of the variables that no loss can reach in a step with
    targets `y`: those used only by submodels with no target in it, no
    regularization loss, and no joint loss or custom loss that could read
    their outputs. They get no gradient rather than a zero one (which an
    optimizer with momentum would still apply)."""
    spec = model._spec
    if spec.joint_losses or model._has_custom_loss():
        return set()
    targets = _targets.split(y, spec.names, "y")
    reached = [
        name
        for name, submodel in model.submodels.items()
        if (name in targets and spec.losses[name] is not None) or submodel.losses
    ]
    positions = set(index.reached_by(reached))
    return {i for i, d in enumerate(index.dependents_of) if d and i not in positions}


def label_gates(model, index, y, losses):
    """`{position: flag}` for the variables of submodels that may have no
    labelled row in a batch: only their own loss reaches them, and they move
    (with their optimizer state) only where `flag` says the batch had one."""
    spec = model._spec
    custom = model._has_custom_loss()
    if spec.joint_losses or custom or losses.labelled is None:
        return {}
    targets = _targets.split(y, spec.names, "y")
    gates = {}
    for i, k in enumerate(losses.indices):
        name = spec.task_names[k]
        if name not in targets:
            continue
        if spec.missing_label is None and not _targets.is_masked_target(targets[name]):
            continue
        flag = ops.greater(losses.labelled[i], 0.0)
        for position in index.only_reached_by([name]):
            gates[position] = flag
    return gates
