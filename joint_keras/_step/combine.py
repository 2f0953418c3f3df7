"""Backend-neutral half of the gradient-level step: from per-task gradients
to the strategy's coefficients, in `keras.ops`.

With `L` the vector of weighted task losses, `J` its Jacobian on the shared
variables (or the shared representation), and the strategy's update `u` on
them (`a @ J` for coefficients `a`; GradDrop gives `u` directly) and
coefficients `b` for the others, the update direction is

    shared variables:  u   (+ the gradient of the other terms)
    other variables:   gradient of  b @ L + other terms

where "other terms" are the regularization losses and any
`compute_joint_loss`. The step computes the second line as one ordinary
gradient of `total + (b - 1) @ L` and adds `u - b @ J` on the shared
variables, so no task needs a separate full backward pass.
"""

from keras import ops

from joint_keras import backend


def gram_matrix(jacobians, num_tasks, loss_scale, per_replica_rows):
    """The Gram matrix `J J^T` of the true per-task gradients.

    Args:
        jacobians: List of tensors `(num_tasks, *shape)`: this replica's
            per-task gradients of the losses as scaled by the optimizer.
        num_tasks: Python int.
        loss_scale: The optimizer's loss scale, divided out.
        per_replica_rows: Python bool. Under `tf.distribute` a variable's
            global gradient is the sum of the replicas' (sum the gradients,
            then take the Gram matrix); a representation's rows are split
            over the replicas (sum the replicas' Gram matrices).

    Returns:
        Tensor `(num_tasks, num_tasks)`, not finite if the scaled gradients
        overflowed (the `LossScaleOptimizer` skips such a step, and the
        strategy's state does not move: `Weighting.combination`).
    """
    flat = ops.concatenate(
        [ops.reshape(ops.cast(j, "float32"), (num_tasks, -1)) for j in jacobians],
        axis=1,
    )
    flat = flat / ops.cast(loss_scale, "float32")
    if per_replica_rows:
        gram = backend.cross_replica_sum(ops.matmul(flat, ops.transpose(flat)))
    else:
        flat = backend.cross_replica_sum(flat)
        gram = ops.matmul(flat, ops.transpose(flat))
    return gram


def summed_over_replicas(jacobians):
    """`(jacobians, replicas)`: the per-task gradients on the shared
    variables summed over the replicas of a `tf.distribute` step (the global
    batch's), and the number of replicas (1 elsewhere)."""
    replicas = backend.cross_replica_sum(ops.ones((), "float32"))
    return [backend.cross_replica_sum(j) for j in jacobians], replicas


def cosine_matrix(gram):
    """Pairwise cosines of the vectors whose Gram matrix is `gram`."""
    norms = ops.sqrt(ops.maximum(ops.diagonal(gram), 0.0))
    return ops.divide_no_nan(gram, ops.outer(norms, norms))


def mix(coefficient, jacobian):
    """`sum_k coefficient[k] * jacobian[k]`, in the jacobian's dtype."""
    return ops.tensordot(ops.cast(coefficient, jacobian.dtype), jacobian, axes=1)


def vectorized(per_task_gradients, num_tasks, at_representation):
    """Whether the step computes the `num_tasks` per-task gradients in one
    vectorized pass (else one backward pass per task), for a strategy's
    `per_task_gradients`.

    On `"auto"`, as measured on CPU by `benchmarks/weighting_step_time.py`
    at 2, 4 and 8 tasks (docs/benchmarks.md): on the shared variables one pass per task
    is never slower on any backend (and 2.3x faster with JAX at 8 tasks);
    at a shared representation the vectorized pass is faster at 4 and 8
    tasks, not at 2, so it is taken from 3 tasks on. On a GPU or TPU, the
    vectorized pass (one large batched product rather than several small
    ones).
    """
    if per_task_gradients != "auto":
        return per_task_gradients == "vectorized"
    if backend.accelerated():
        return True
    return at_representation and num_tasks > 2
