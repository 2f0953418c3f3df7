"""Hand-written reference gradients, one small function per backend.

Tests compare `JointModel` against these: a plain `tf.GradientTape`,
`jax.value_and_grad` or `torch.autograd` step on the same weights, written
the way a careful user would write the joint loop by hand.
"""

import contextlib

import keras
import numpy as np


def value_and_grad(loss_fn, variables):
    """Returns `(loss, grads)` of `loss_fn()` w.r.t. `variables`, as numpy.

    Args:
        loss_fn: Callable with no arguments returning a scalar tensor,
            computed from the current values of `variables`.
        variables: List of `keras.Variable`.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = loss_fn()
        grads = tape.gradient(loss, variables)
    elif backend == "jax":
        import jax

        def stateless_loss(values):
            mapping = list(zip(variables, values))
            with keras.StatelessScope(state_mapping=mapping):
                return loss_fn()

        loss, grads = jax.value_and_grad(stateless_loss)([v.value for v in variables])
    elif backend == "torch":
        for v in variables:
            v.value.grad = None
        loss = loss_fn()
        loss.backward()
        grads = [v.value.grad for v in variables]
    else:
        raise NotImplementedError(backend)
    to_numpy = keras.ops.convert_to_numpy
    return float(to_numpy(loss)), [None if g is None else to_numpy(g) for g in grads]


def sgd_step(loss_fn, variables, learning_rate):
    """One plain SGD step by hand; returns `(loss, new_values)` as numpy."""
    loss, grads = value_and_grad(loss_fn, variables)
    new_values = [
        keras.ops.convert_to_numpy(v) - learning_rate * g
        for v, g in zip(variables, grads)
    ]
    return loss, new_values


def unique_variables(*models):
    """Trainable variables of `models`, each shared variable listed once."""
    seen, unique = set(), []
    for model in models:
        for v in model.trainable_variables:
            if id(v) not in seen:
                seen.add(id(v))
                unique.append(v)
    return unique


def weights_of(*models):
    return [np.array(keras.ops.convert_to_numpy(v)) for v in unique_variables(*models)]


def strategy_coefficients(strategy, jac):
    """`(a, b)` of a gradient-level `strategy` built for `len(jac)` tasks of
    weight 1 and unit losses, on the float32 Gram matrix of the rows of
    `jac`: the combination of the shared gradients (as float64) and of the
    others."""
    ops = keras.ops
    k = len(jac)
    strategy.build_for_tasks([f"t{i}" for i in range(k)], [1.0] * k)
    gram = ops.convert_to_tensor((jac @ jac.T).astype("float32"))
    a, b = strategy.coefficients(gram, ops.ones((k,)), list(range(k)), training=True)
    return ops.convert_to_numpy(a).astype("float64"), ops.convert_to_numpy(b)


@contextlib.contextmanager
def float64_enabled():
    """Float64 arrays on every backend (JAX makes them float32 unless x64 is
    enabled)."""
    if keras.backend.backend() == "jax":
        import jax

        with jax.enable_x64(True):
            yield
    else:
        yield
