"""`UPGrad`: unconflicting projection of gradients (Quinton & Rey)."""

import keras
from keras import ops

from joint_keras.weighting import _solvers
from joint_keras.weighting.base import Coefficients
from joint_keras.weighting.base import Weighting


@keras.saving.register_keras_serializable(package="joint_keras")
class UPGrad(Weighting):
    """Averages the task gradients after projecting each onto the cone of
    directions that conflict with none of them.

    Each `g_i` is projected onto the dual cone `{x : g_k . x >= 0 for all k}`
    of the task gradients; the update is the mean of the projections. No
    task's loss increases to first order, and with non-conflicting
    gradients the update is the plain mean. The projections are solved in
    the dual, on the Gram matrix, exactly: `v_i = argmin_{v >= e_i} v^T G v`,
    `a = mean_i v_i` (`jk.weighting` solvers: every free set at once, one
    batched inverse).

    References:
        Quinton, Rey. Jacobian Descent for Multi-Objective Optimization.
        arXiv:2406.16232, 2024.

    Args:
        norm_eps: Non-negative float. With `reg_eps`, the regularization of
            the Gram matrix of the reference implementation (TorchJD, which
            uses 1e-4 for both): it is divided by its trace plus
            `norm_eps`, and `reg_eps` is added to its diagonal. Defaults to
            0.0 (the exact problem).
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
        n = len(indices)
        v = _solvers.project_to_dual_cone(gram, ops.eye(n, dtype=gram.dtype))
        a = ops.mean(v, axis=0)
        return Coefficients(a, ops.ones_like(a))

    def get_config(self):
        return {
            **super().get_config(),
            "norm_eps": self.norm_eps,
            "reg_eps": self.reg_eps,
        }
