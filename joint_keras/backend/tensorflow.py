"""TensorFlow: gradients from one forward pass under a persistent tape."""

import contextlib

import tensorflow as tf

from joint_keras import _compat


def run_step(model, step, args):
    """Runs `step(data)` as Keras's TensorFlow trainer runs a step."""
    (data,) = args
    return _compat.multi_worker_step_logs(step(data))


def keep_state_on_error(model):
    """A no-op here (see `jax.keep_state_on_error`)."""
    return contextlib.nullcontext()


def vjp(fn, variables, probes=(), state=None):
    """Runs `fn(probes)` under a persistent tape.

    Args:
        fn: Callable `fn(probes) -> (outputs, aux)`, `outputs` a dict of
            tensors to differentiate.
        variables: List of the `keras.Variable`s to differentiate for.
        probes: List of tensors `fn` adds to intermediate values, to
            differentiate for those values.
        state: Unused here (JAX calls it for the step's variables).

    Returns:
        `(outputs, aux, Linearization)`.
    """
    del state
    probes = [tf.convert_to_tensor(p) for p in probes]
    with tf.GradientTape(persistent=True) as tape:
        for probe in probes:
            tape.watch(probe)
        outputs, aux = fn(probes)
    return outputs, aux, Linearization(tape, outputs, variables, probes)


class Linearization:
    """Gradients of a forward pass's outputs, as many as needed."""

    def __init__(self, tape, outputs, variables, probes):
        self.tape, self.outputs = tape, outputs
        self.variables, self.probes = variables, probes

    def pullback(self, cotangents, indices):
        """Gradients of `sum_k cotangents[k] . outputs[k]` for
        `variables[indices]` and every probe (`None` where unconnected)."""
        keys = list(cotangents)
        sources = [self.variables[i] for i in indices] + self.probes
        grads = self.tape.gradient(
            [self.outputs[k] for k in keys],
            sources,
            output_gradients=[_like(cotangents[k], self.outputs[k]) for k in keys],
        )
        return grads[: len(indices)], grads[len(indices) :]

    def connected(self, key, indices):
        """Whether `outputs[key]` depends on each of `variables[indices]`
        (the gradient is only traced: unused, it is pruned from the graph)."""
        sources = [self.variables[i] for i in indices]
        return [g is not None for g in self.tape.gradient(self.outputs[key], sources)]

    def jacobian(self, key, indices, vectorized=True):
        """Per-row gradients `(rows, *shape)` of the vector `outputs[key]`
        for `variables[indices]` and every probe: in one vectorized pass
        (`pfor`; a loop where `pfor` cannot convert an op), or a loop."""
        sources = [self.variables[i] for i in indices] + self.probes
        try:
            rows = self.tape.jacobian(
                self.outputs[key], sources, experimental_use_pfor=vectorized
            )
        except (ValueError, NotImplementedError, TypeError):
            rows = self.tape.jacobian(
                self.outputs[key], sources, experimental_use_pfor=False
            )
        return rows[: len(indices)], rows[len(indices) :]


def _like(cotangent, output):
    cotangent = tf.cast(cotangent, output.dtype)
    return tf.broadcast_to(cotangent, tf.shape(output))


def input_gradient(fn, inputs, state=None):
    """The gradient of `sum(fn(inputs))` with respect to `inputs`, itself
    differentiable (under the step's tape, for a gradient penalty)."""
    del state
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        outputs = fn(inputs)
    return tape.gradient(outputs, inputs)


def apply(optimizer, grads, variables):
    """Applies `grads` (aligned with `variables`, `None` for none)."""
    pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
    optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])


def cross_replica_sum(x):
    """Sum of `x` over the replicas of a `tf.distribute` step."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return x
    return context.all_reduce(tf.distribute.ReduceOp.SUM, x)


def accelerated():
    """Whether the step runs on a GPU or TPU rather than the CPU."""
    return bool(
        tf.config.list_logical_devices("GPU") + tf.config.list_logical_devices("TPU")
    )
