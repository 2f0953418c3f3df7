"""JAX: one gradient per loss group, from one forward pass (one VJP per
group on a single linearization)."""

import jax
import jax.numpy as jnp
import keras

from joint_keras import _routing


def train_step(model, state, data):
    trainable, non_trainable, optimizer_vars, metrics_vars = state
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    keys = []

    def group_losses(trainable_values):
        _, aux = model.compute_loss_and_updates(
            trainable_values,
            non_trainable,
            metrics_vars,
            x,
            y,
            sample_weight,
            training=True,
            optimizer_variables=optimizer_vars,
        )
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


def _stateless_apply(model, grads, trainable, optimizer_vars):
    """`optimizer.stateless_apply` on the variables that have a gradient."""
    optimizer, variables = model.optimizer, model.trainable_variables
    mapping = list(zip(variables, trainable))
    mapping += list(zip(optimizer.variables, optimizer_vars))
    with keras.StatelessScope(state_mapping=mapping) as scope:
        optimizer.apply(*_routing.with_gradients(grads, variables))
    return (
        [scope.get_current_value(v) for v in variables],
        [scope.get_current_value(v) for v in optimizer.variables],
    )
