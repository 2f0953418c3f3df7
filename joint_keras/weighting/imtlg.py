"""`IMTLG`: impartial multi-task learning, gradient part (Liu et al.)."""

import keras
from keras import ops

from joint_keras.linalg import equal_projection_weights
from joint_keras.weighting.base import Coefficients
from joint_keras.weighting.base import Weighting


@keras.saving.register_keras_serializable(package="joint_keras")
class IMTLG(Weighting):
    """Combines the task gradients into a direction with equal projections
    onto every task's unit gradient.

    The shared variables get `g = sum_k a_k g_k` with `sum_k a_k = 1` and
    `g . u_k` the same for every task, `u_k = g_k / |g_k|`: no task is
    favoured, whatever the scale of its gradient. The paper's closed form,
    `a_{2:K} = g_1 U^T (D U^T)^-1` with `D` and `U` the rows `g_1 - g_k`
    and `u_1 - u_k`, is equivalently `a = b / sum(b)` with `G b` along the
    gradient norms: here `b = D^-1 C^+ 1`, on the correlation matrix `C`
    (see `joint_keras.linalg.equal_projection_weights`). For linearly
    dependent gradients the paper's system is singular; the pseudo-inverse
    gives a solution when one exists (TorchJD takes `G^+ |g|` instead:
    another solution, that differs only there). Zero weights when `sum(b)`
    vanishes. The other variables get their task's gradient, as in the
    paper (IMTL-L, the loss part, is not included).

    {{gradient_level_layouts}}

    References:
        Liu, Li, Kuang, Xue, Chen, Yang, Liao, Zhang. Towards Impartial
        Multi-task Learning. ICLR 2021.

    Args:
        **kwargs: `representation` (see `jk.weighting.Weighting`), `name`.
    """

    gradient_level = True

    def coefficients(self, gram, losses, indices, training):
        b = equal_projection_weights(gram)
        total = ops.sum(b)
        solved = ops.abs(total) > 1e-6 * ops.sum(ops.abs(b))
        a = ops.where(solved, b / ops.where(solved, total, 1.0), 0.0)
        return Coefficients(a, ops.ones_like(a))
