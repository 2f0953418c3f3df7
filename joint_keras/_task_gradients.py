"""Backend-neutral half of the gradient-level step.

The backend steps (`joint_keras/backend/*.py`, `gradient_step`) take the
Jacobian of the task losses with respect to the shared variables in one
vectorized pass; everything else is here, in `keras.ops`: the Gram matrix,
the strategy's coefficients, the diagnostics, and the mixing.

With `L` the vector of weighted task losses, `J` its Jacobian on the shared
variables and `(a, b)` the strategy's coefficients, the update direction is

    shared variables:  a @ J   (+ the gradient of the other terms)
    other variables:   gradient of  b @ L + other terms

where "other terms" are the regularization losses and any
`compute_joint_loss`. The backends compute the second line as one ordinary
gradient of `total + (b - 1) @ L` and add `(a - b) @ J` on the shared
variables, so no task needs a separate full backward pass.
"""

import contextlib
import threading

from keras import ops

from joint_keras import backend


def shared_variable_indices(model):
    """Indices into `model.trainable_variables` of the variables that two
    or more submodels use."""
    owners = {}
    for submodel in model.submodels.values():
        for v in {id(v): v for v in submodel.trainable_variables}.values():
            owners[id(v)] = owners.get(id(v), 0) + 1
    indices = [
        i for i, v in enumerate(model.trainable_variables) if owners.get(id(v), 0) > 1
    ]
    if not indices:
        raise ValueError(
            f"`weighting={model._weighting.name!r}` combines the tasks' "
            "gradients on the variables the submodels share, but these "
            f"submodels ({list(model.submodels)}) share none. Share a layer "
            "(a trunk) between them, or use a loss-level strategy."
        )
    return indices


def representation_layer(model):
    """The layer named by the strategy's `representation`, or None."""
    name = model._weighting.representation
    if name is None:
        return None
    for submodel in model.submodels.values():
        for layer in submodel._flatten_layers(include_self=False):
            if layer.name == name:
                return layer
    raise ValueError(
        f"`representation={name!r}` names no layer of the submodels "
        f"{list(model.submodels)}."
    )


# id(layer) -> {thread id: (outputs, transform)} while a capture is open.
_CAPTURES = {}


@contextlib.contextmanager
def capture_outputs(layer, transform=None):
    """Collects the outputs of every call of `layer` in a list.

    With `transform(i, output)`, the i-th call returns its result instead
    (the JAX step adds a zero "probe" input there, to differentiate with
    respect to the representation).

    Calls are captured per thread: `tf.distribute` traces each replica's
    step in its own thread, switching between them at cross-replica calls.
    """
    outputs = []
    if layer is None:
        yield outputs
        return
    captures = _CAPTURES.get(id(layer))
    if captures is None:
        captures = _CAPTURES[id(layer)] = {}
        original = layer.call

        def call(*args, **kwargs):
            output = original(*args, **kwargs)
            capture = captures.get(threading.get_ident())
            if capture is not None:
                collected, fn = capture
                if fn is not None:
                    output = fn(len(collected), output)
                collected.append(output)
            return output

        layer.call = call
    captures[threading.get_ident()] = (outputs, transform)
    try:
        yield outputs
    finally:
        del captures[threading.get_ident()]
        if not captures:
            del _CAPTURES[id(layer)]
            del layer.call
    if not outputs:
        raise ValueError(
            f"The representation layer {layer.name!r} was not called by any "
            "submodel in this step."
        )


def coefficients(model, jacobians, losses, loss_scale=None, training=True):
    """Strategy coefficients `(a, b)` from per-task gradients.

    Args:
        model: The `JointModel`.
        jacobians: List, one per shared variable (or the representation),
            of tensors `(num_tasks, *shape)`: this replica's per-task
            gradients, of the losses as scaled by the optimizer.
        losses: Tensor `(num_tasks,)` of the unweighted task losses of the
            global batch.
        loss_scale: The optimizer's loss scale (mixed precision), divided
            out so that the strategy sees the true gradients.
        training: Python bool.

    Returns:
        Tuple of tensors `(a, b)`, each `(num_tasks,)`, without gradient.
    """
    num_tasks = ops.shape(losses)[0]
    flat = ops.concatenate(
        [ops.reshape(ops.cast(j, "float32"), (num_tasks, -1)) for j in jacobians],
        axis=1,
    )
    if loss_scale is not None:
        flat = flat / ops.cast(loss_scale, "float32")
    # Under `tf.distribute`, the global gradient on a variable is the sum
    # of the replicas'; the gradient on the representation is split by
    # batch rows, so its Gram matrix is the sum of the replicas'.
    if model._weighting.representation is None:
        flat = backend.cross_replica_sum(flat)
        gram = ops.matmul(flat, ops.transpose(flat))
    else:
        gram = backend.cross_replica_sum(ops.matmul(flat, ops.transpose(flat)))
    # A step whose scaled gradients overflowed (mixed precision) is skipped
    # by the `LossScaleOptimizer`; keep it away from the strategy's state.
    gram = ops.where(ops.all(ops.isfinite(gram)), gram, ops.zeros_like(gram))
    compile_loss = model._compile_loss
    compile_loss.record_cosines(gram)
    a, b = model._weighting.coefficients(
        gram,
        ops.stop_gradient(losses),
        compile_loss.task_indices,
        training,
    )
    a, b = ops.stop_gradient(a), ops.stop_gradient(b)
    compile_loss.record_coefficients(a)
    return a, b


def mix(coefficient, jacobian):
    """`sum_k coefficient[k] * jacobian[k]`, in the jacobian's dtype."""
    return ops.tensordot(ops.cast(coefficient, jacobian.dtype), jacobian, axes=1)


def add_mixed(grads, jacobians, shared, a, b):
    """Adds `(a - b) @ J` to the gradients of the shared variables, in
    place (a missing gradient counts as zero)."""
    for jacobian, i in zip(jacobians, shared):
        mixed = mix(a - b, jacobian)
        grads[i] = mixed if grads[i] is None else grads[i] + mixed
    return grads


def rest_loss(total, losses, b):
    """`total + (b - 1) @ losses`: its gradient is `b @ grad L` plus that of
    the other terms."""
    return total + ops.sum((ops.cast(b, losses.dtype) - 1.0) * losses)


__all__ = [
    "coefficients",
    "add_mixed",
    "mix",
    "rest_loss",
    "shared_variable_indices",
]
