"""`MGDA`: the multiple-gradient descent algorithm (Sener & Koltun)."""

import keras
from keras import ops

from joint_keras.weighting import _solvers
from joint_keras.weighting.base import Coefficients
from joint_keras.weighting.base import Weighting


@keras.saving.register_keras_serializable(package="joint_keras")
class MGDA(Weighting):
    """Moves along the minimum-norm convex combination of the task gradients.

    The shared variables get `sum_k w_k g_k` with `w` the point of the
    simplex minimizing `|sum_k w_k g_k|^2`: a direction that decreases every
    task's loss, or zero at a Pareto-stationary point. The other variables
    get their task's gradient. `w` is solved exactly on the Gram matrix
    (`jk.weighting` solvers: every support at once, one batched inverse).

    References:
        Sener, Koltun. Multi-Task Learning as Multi-Objective Optimization.
        NeurIPS 2018.

    Args:
        norm_eps: Non-negative float. With `reg_eps`, the regularization of
            the Gram matrix of the reference implementation (TorchJD): it is
            divided by its trace plus `norm_eps`, and `reg_eps` is added to
            its diagonal. Defaults to 0.0 (the exact problem).
        reg_eps: Non-negative float. Defaults to 0.0.
        **kwargs: `representation` (see `jk.weighting.Weighting`), `name`.
    """

    gradient_level = True

    def __init__(self, norm_eps=0.0, reg_eps=0.0, **kwargs):
        super().__init__(**kwargs)
        self.norm_eps = float(norm_eps)
        self.reg_eps = float(reg_eps)

    def coefficients(self, gram, losses, indices, training):
        if self.norm_eps or self.reg_eps:
            gram = _solvers.normalize_gram(gram, self.norm_eps, self.reg_eps)
        w = _solvers.min_norm_weights(gram)
        return Coefficients(w, ops.ones_like(w))

    def get_config(self):
        return {
            **super().get_config(),
            "norm_eps": self.norm_eps,
            "reg_eps": self.reg_eps,
        }
