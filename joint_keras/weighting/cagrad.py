"""`CAGrad`: conflict-averse gradient descent (Liu et al.)."""

import keras
from keras import ops

from joint_keras.weighting.base import Coefficients
from joint_keras.weighting.base import Weighting


@keras.saving.register_keras_serializable(package="joint_keras")
class CAGrad(Weighting):
    """Stays near the average gradient while improving the worst task.

    With `g0` the mean task gradient and `phi = c^2 |g0|^2`, find
    `w` on the simplex minimizing `g_w . g0 + sqrt(phi) |g_w|`
    (`g_w = sum_k w_k g_k`), and move along
    `(g0 + sqrt(phi) / |g_w| g_w) / (1 + c^2)`. `c = 0` is plain averaging.
    Solved on the Gram matrix by exponentiated-gradient (mirror) descent
    over the simplex.

    References:
        Liu, Liu, Jin, Stone, Liu. Conflict-Averse Gradient Descent for
        Multi-task Learning. NeurIPS 2021.

    Args:
        c: Non-negative float. Defaults to 0.4.
        iterations: Int, solver iterations. Defaults to 100.
        learning_rate: Float, solver step size. Defaults to 0.5.
        **kwargs: `representation` (see `jk.weighting.Weighting`), `name`.
    """

    gradient_level = True

    def __init__(self, c=0.4, iterations=100, learning_rate=0.5, **kwargs):
        super().__init__(**kwargs)
        if not c >= 0:
            raise ValueError(f"`c` must be non-negative. Received: c={c!r}")
        self.c = float(c)
        self.iterations = int(iterations)
        self.learning_rate = float(learning_rate)

    def coefficients(self, gram, losses, indices, training):
        n = len(indices)
        # The minimizer does not change when `gram` is scaled.
        scale = ops.maximum(ops.mean(ops.diagonal(gram)), 1e-12)
        m = gram / scale
        mean = ops.ones((n,), m.dtype) / n
        sqrt_phi = self.c * ops.sqrt(
            ops.maximum(ops.sum(mean * ops.matmul(m, mean)), 0.0)
        )
        m_mean = ops.matmul(m, mean)

        def body(_, w):
            m_w = ops.matmul(m, w)
            norm = ops.sqrt(ops.maximum(ops.sum(w * m_w), 1e-12))
            grad = m_mean + sqrt_phi * m_w / norm
            w = w * ops.exp(-self.learning_rate * grad)
            return w / ops.sum(w)

        w = ops.fori_loop(0, self.iterations, body, mean)
        norm_w = ops.sqrt(ops.maximum(ops.sum(w * ops.matmul(m, w)), 0.0))
        lam = ops.divide_no_nan(sqrt_phi, norm_w)
        a = (mean + lam * w) / (1.0 + self.c**2)
        return Coefficients(a, ops.ones_like(a))

    def get_config(self):
        return {
            **super().get_config(),
            "c": self.c,
            "iterations": self.iterations,
            "learning_rate": self.learning_rate,
        }
