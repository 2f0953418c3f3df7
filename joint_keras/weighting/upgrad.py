"""`UPGrad`: unconflicting projection of gradients (Quinton & Rey)."""

import keras
from keras import ops

from joint_keras._compile.checks import check_number
from joint_keras.linalg import normalize_gram
from joint_keras.linalg import project_to_dual_cone
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
    the dual, on the Gram matrix: `v_i = argmin_{v >= e_i} v^T G v`,
    `a = mean_i v_i`, by `joint_keras.linalg.project_to_dual_cone`: exactly
    up to 10 tasks (every free set at once, one batched inverse), by Lawson
    and Hanson's active-set method beyond. The solution does not depend on the
    scale of the Gram matrix.

    {{gradient_level_layouts}}

    References:
        Quinton, Rey. Jacobian Descent for Multi-Objective Optimization.
        arXiv:2406.16232, 2024.

    Args:
        norm_eps: Non-negative finite float. When `norm_eps` or `reg_eps` is
            positive, the Gram matrix is first regularized as TorchJD
            regularizes it (with 1e-4 for both;
            `joint_keras.linalg.normalize_gram`): divided by its trace (the
            sum of the squared gradient norms), or replaced by the zero
            matrix when that trace is not above `norm_eps` (then the update
            is the plain mean of the gradients), and `reg_eps` is added to
            its diagonal. Dividing by the trace
            alone changes nothing. Defaults to 0.0: with both 0, the Gram
            matrix is used as it is (the exact problem).
        reg_eps: Non-negative finite float, the ridge added to the diagonal
            of the normalized Gram matrix (see `norm_eps`). Defaults to
            0.0.
        **kwargs: `representation` (see `jk.weighting.Weighting`), `name`.
    """

    gradient_level = True

    def __init__(self, norm_eps=0.0, reg_eps=0.0, **kwargs):
        super().__init__(**kwargs)
        owner = "jk.weighting.UPGrad"
        self.norm_eps = check_number(norm_eps, "norm_eps", owner, minimum=0)
        self.reg_eps = check_number(reg_eps, "reg_eps", owner, minimum=0)

    def coefficients(self, gram, losses, indices, training):
        if self.norm_eps or self.reg_eps:
            gram = normalize_gram(gram, self.norm_eps, self.reg_eps)
        n = len(indices)
        v = project_to_dual_cone(gram, ops.eye(n, dtype=gram.dtype))
        a = ops.mean(v, axis=0)
        return Coefficients(a, ops.ones_like(a))

    def get_config(self):
        return {
            **super().get_config(),
            "norm_eps": self.norm_eps,
            "reg_eps": self.reg_eps,
        }
