"""TensorFlow: one gradient per loss group, from one forward pass."""

import keras
import tensorflow as tf
from keras import ops
from keras import tree

from joint_keras import _routing
from joint_keras import _task_gradients
from joint_keras._keras_private import unscale_loss_for_distribution


def train_step(model, data):
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    with tf.GradientTape(persistent=True) as tape:
        y_pred = model(x, training=True)
        groups = model._compute_loss_groups(x, y, y_pred, sample_weight, training=True)
        total = ops.sum(ops.stack(list(groups.values())))
        model._loss_tracker.update_state(
            unscale_loss_for_distribution(total),
            sample_weight=tf.shape(tree.flatten(x)[0])[0],
        )
        scaled = [model.optimizer.scale_loss(loss) for loss in groups.values()]
    variables = model.trainable_variables
    indices = _routing.group_indices(model, groups)
    per_group = [
        tape.gradient(loss, [variables[i] for i in idx])
        for loss, idx in zip(scaled, indices)
    ]
    del tape
    grads = _routing.combine(per_group, indices, len(variables))
    model.optimizer.apply(*_routing.with_gradients(grads, variables))
    return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


def gradient_step(model, data):
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    optimizer = model.optimizer
    layer = _task_gradients.representation_layer(model)
    with (
        tf.GradientTape(persistent=True) as tape,
        _task_gradients.capture_outputs(layer) as copies,
    ):
        y_pred = model(x, training=True)
        groups = model._compute_loss_groups(x, y, y_pred, sample_weight, training=True)
        total = groups[None]
        model._loss_tracker.update_state(
            unscale_loss_for_distribution(total),
            sample_weight=tf.shape(tree.flatten(x)[0])[0],
        )
        losses = model._compile_loss.task_losses
        scaled_losses = optimizer.scale_loss(losses)
    variables = model.trainable_variables
    if layer is None:
        shared = _task_gradients.shared_variable_indices(model)
        sources = [variables[i] for i in shared]
    else:
        sources = copies
    jacobians = _jacobian(tape, scaled_losses, sources)
    if layer is not None:
        # Each copy's output is the same representation: sum per task.
        jacobians = [tf.add_n(jacobians)]
    a, b = _task_gradients.coefficients(
        model,
        jacobians,
        model._compile_loss.task_raw_losses,
        loss_scale=optimizer.scale_loss(tf.constant(1.0)),
    )
    with tape:
        rest = optimizer.scale_loss(_task_gradients.rest_loss(total, losses, b))
    if layer is None:
        grads = tape.gradient(rest, variables)
        _task_gradients.add_mixed(grads, jacobians, shared, a, b)
    else:
        # The trunk's combined update: its backward pass from the first
        # copy, given the mixed minus the summed representation gradient.
        correction = _task_gradients.mix(a - b, jacobians[0])
        grads = tape.gradient(
            [rest, copies[0]],
            variables,
            output_gradients=[tf.ones_like(rest), correction],
        )
    del tape
    optimizer.apply(*_routing.with_gradients(grads, variables))
    return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


def _jacobian(tape, losses, variables):
    """Per-task gradients `(num_tasks, *shape)` per variable, vectorized with
    `pfor` (a loop of gradients where `pfor` cannot convert an op)."""
    try:
        return tape.jacobian(losses, variables, experimental_use_pfor=True)
    except (ValueError, NotImplementedError, TypeError):
        return tape.jacobian(losses, variables, experimental_use_pfor=False)


def cross_replica_sum(x):
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return x
    return context.all_reduce(tf.distribute.ReduceOp.SUM, x)


def first_replica_batch(iterator):
    """One batch of a (possibly distributed) epoch iterator, as this
    worker's first replica sees it: enough for a symbolic build."""
    for _, _, it in iterator:
        batch = next(it)
        return tree.map_structure(
            lambda v: (
                v.values[0] if isinstance(v, tf.distribute.DistributedValues) else v
            ),
            batch,
        )
    return None


def step_logs(logs):
    """Under `MultiWorkerMirroredStrategy`, the step's scalar logs as
    vectors of one entry: Keras 3 averages them over replicas with
    `strategy.reduce("MEAN", v, axis=0)`, which needs an axis 0
    (keras-team/keras#20585)."""
    strategy = tf.distribute.get_strategy()
    multi_worker = (
        isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        and strategy.extended._in_multi_worker_mode()
    )
    if not multi_worker:
        return logs
    return tree.map_structure(
        lambda v: tf.reshape(v, (1,)) if v.shape.rank == 0 else v, logs
    )
