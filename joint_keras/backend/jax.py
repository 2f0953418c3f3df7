"""JAX: gradients per loss group or per task from one forward pass: one
linearization (`jax.vjp`), then one VJP per group, or all tasks' VJPs at
once under `jax.vmap`."""

import jax
import jax.numpy as jnp
import keras

from joint_keras import _routing
from joint_keras import _task_gradients


def train_step(model, state, data):
    trainable, non_trainable, optimizer_vars, metrics_vars = state
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    keys = []

    def group_losses(trainable_values):
        _, aux = _forward(model, trainable_values, state, x, y, sample_weight)
        # Filled by `compute_loss` during this same trace.
        groups = model._trace.loss_groups
        keys[:] = list(groups)
        mapping = list(zip(model.optimizer.variables, optimizer_vars))
        with keras.StatelessScope(state_mapping=mapping):
            scaled = [model.optimizer.scale_loss(v) for v in groups.values()]
        return jnp.stack(scaled), aux

    losses, vjp_fn, aux = jax.vjp(group_losses, trainable, has_aux=True)
    unscaled_loss, y_pred, non_trainable, metrics_vars = aux
    indices = _routing.group_indices(model, keys)
    basis = jnp.eye(len(keys), dtype=losses.dtype)
    per_group = []
    for k, idx in enumerate(indices):
        (grads,) = vjp_fn(basis[k])
        per_group.append([grads[i] for i in idx])
    grads = _routing.combine(per_group, indices, len(trainable))
    trainable, optimizer_vars = _stateless_apply(
        model, grads, trainable, optimizer_vars
    )
    logs, metrics_vars = model._update_metrics_variables(
        metrics_vars, unscaled_loss, x, y, y_pred, sample_weight
    )
    return logs, (trainable, non_trainable, optimizer_vars, metrics_vars)


def _forward(model, trainable_values, state, x, y, sample_weight):
    """Keras's stateless forward pass and loss, at `trainable_values`."""
    _, non_trainable, optimizer_vars, metrics_vars = state
    return model.compute_loss_and_updates(
        trainable_values,
        non_trainable,
        metrics_vars,
        x,
        y,
        sample_weight,
        training=True,
        optimizer_variables=optimizer_vars,
    )


def _stateless_apply(model, grads, trainable, optimizer_vars):
    """`optimizer.stateless_apply` on the variables that have a gradient."""
    optimizer, variables = model.optimizer, model.trainable_variables
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        # Its stateful `apply` assigns inside `ops.cond` branches, which
        # `jax.jit` cannot trace: use its stateless form, as Keras does.
        return optimizer.stateless_apply(optimizer_vars, grads, trainable)
    mapping = list(zip(variables, trainable))
    mapping += list(zip(optimizer.variables, optimizer_vars))
    with keras.StatelessScope(state_mapping=mapping) as scope:
        optimizer.apply(*_routing.with_gradients(grads, variables))
    return (
        [scope.get_current_value(v) for v in variables],
        [scope.get_current_value(v) for v in optimizer.variables],
    )


def gradient_step(model, state, data):
    trainable, non_trainable, optimizer_vars, metrics_vars = state
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    optimizer = model.optimizer
    layer = _task_gradients.representation_layer(model)

    def losses_and_representation(trainable_values, probes):
        # A zero probe added to each copy of the representation: its
        # gradient is the gradient with respect to the representation.
        add_probe = None if not probes else (lambda i, out: out + probes[i])
        with _task_gradients.capture_outputs(layer, add_probe) as copies:
            loss, aux = _forward(model, trainable_values, state, x, y, sample_weight)
        # Filled by `compute_loss` during this same trace.
        losses = model._compile_loss.task_losses
        mapping = list(zip(optimizer.variables, optimizer_vars))
        with keras.StatelessScope(state_mapping=mapping):
            scaled = optimizer.scale_loss(losses)
            loss_scale = optimizer.scale_loss(jnp.ones((), losses.dtype))
        first = copies[0] if copies else jnp.zeros(())
        raw = model._compile_loss.task_raw_losses
        return (jnp.concatenate([scaled, loss[None]]), first), (aux, raw, loss_scale)

    probes = []
    if layer is not None:
        probes = [
            jnp.zeros(copy.shape, copy.dtype)
            for copy in jax.eval_shape(
                lambda t: _representation_copies(
                    model, layer, t, state, x, y, sample_weight
                ),
                trainable,
            )
        ]
    (outputs, first), vjp_fn, (aux, raw_losses, loss_scale) = jax.vjp(
        losses_and_representation, trainable, probes, has_aux=True
    )
    unscaled_loss, y_pred, non_trainable, metrics_vars = aux
    num_tasks = outputs.shape[0] - 1
    no_cotangent = jnp.zeros_like(first)
    # One vectorized backward pass for all tasks' gradients.
    rows = jnp.eye(num_tasks, num_tasks + 1, dtype=outputs.dtype)
    per_variable, per_probe = jax.vmap(lambda row: vjp_fn((row, no_cotangent)))(rows)
    if layer is None:
        shared = _task_gradients.shared_variable_indices(model)
        jacobians = [per_variable[i] for i in shared]
    else:
        # Each copy's output is the same representation: sum per task.
        jacobians = [sum(per_probe[1:], per_probe[0])]

    # The strategy may update its state and the cosine trackers.
    mapping = list(zip(model.non_trainable_variables, non_trainable))
    mapping += list(zip(model.metrics_variables, metrics_vars))
    with keras.StatelessScope(state_mapping=mapping) as scope:
        a, b = _task_gradients.coefficients(
            model, jacobians, raw_losses, loss_scale=loss_scale
        )
    non_trainable = [scope.get_current_value(v) for v in model.non_trainable_variables]
    metrics_vars = [scope.get_current_value(v) for v in model.metrics_variables]

    # Gradient of `total + (b - 1) @ L`, plus `(a - b) @ J` on the shared
    # variables, or pushed back through the trunk from its output.
    cotangent = jnp.concatenate(
        [b.astype(outputs.dtype) - 1.0, jnp.ones((1,), outputs.dtype)]
    )
    if layer is None:
        grads, _ = vjp_fn((cotangent, no_cotangent))
        grads = _task_gradients.add_mixed(list(grads), jacobians, shared, a, b)
    else:
        correction = _task_gradients.mix(a - b, jacobians[0])
        grads, _ = vjp_fn((cotangent, correction.astype(first.dtype)))
        grads = list(grads)
    trainable, optimizer_vars = _stateless_apply(
        model, grads, trainable, optimizer_vars
    )
    logs, metrics_vars = model._update_metrics_variables(
        metrics_vars, unscaled_loss, x, y, y_pred, sample_weight
    )
    return logs, (trainable, non_trainable, optimizer_vars, metrics_vars)


def _representation_copies(model, layer, trainable, state, x, y, sample_weight):
    """The outputs of every call of `layer` in one forward pass."""
    with _task_gradients.capture_outputs(layer) as copies:
        _forward(model, trainable, state, x, y, sample_weight)
    return copies
