"""`MGDA`: the multiple-gradient descent algorithm (Sener & Koltun)."""

import keras
from keras import ops

from joint_keras.weighting.base import Coefficients
from joint_keras.weighting.base import Weighting


def min_norm_weights(gram, iterations):
    """Frank-Wolfe for `argmin_{w in simplex} w^T gram w`."""
    n = ops.shape(gram)[0]
    w = ops.ones((n,), gram.dtype) / ops.cast(n, gram.dtype)

    def body(_, w):
        gw = ops.matmul(gram, w)
        t = ops.argmin(gw)
        e = ops.one_hot(t, n, dtype=gram.dtype)
        ww, we, ee = ops.sum(w * gw), ops.take(gw, t), ops.take(ops.diagonal(gram), t)
        gamma = ops.clip(ops.divide_no_nan(ww - we, ww - 2.0 * we + ee), 0.0, 1.0)
        return (1.0 - gamma) * w + gamma * e

    return ops.fori_loop(0, iterations, body, w)


@keras.saving.register_keras_serializable(package="joint_keras")
class MGDA(Weighting):
    """Moves along the minimum-norm convex combination of the task gradients.

    The shared variables get `sum_k w_k g_k` with `w` the point of the
    simplex minimizing `|sum_k w_k g_k|^2` (found by Frank-Wolfe on the Gram
    matrix): a direction that decreases every task's loss, or zero at a
    Pareto-stationary point. The other variables get their task's gradient.

    References:
        Sener, Koltun. Multi-Task Learning as Multi-Objective Optimization.
        NeurIPS 2018.

    Args:
        iterations: Int, Frank-Wolfe iterations. Defaults to 50.
        **kwargs: `representation` (see `jk.weighting.Weighting`), `name`.
    """

    gradient_level = True

    def __init__(self, iterations=50, **kwargs):
        super().__init__(**kwargs)
        self.iterations = int(iterations)

    def coefficients(self, gram, losses, indices, training):
        w = min_norm_weights(gram, self.iterations)
        return Coefficients(w, ops.ones_like(w))

    def get_config(self):
        return {**super().get_config(), "iterations": self.iterations}
