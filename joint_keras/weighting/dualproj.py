"""`DualProj`: the mean gradient projected onto the dual cone (Quinton & Rey)."""

import keras
from keras import ops

from joint_keras.linalg import project_to_dual_cone
from joint_keras.weighting.base import Coefficients
from joint_keras.weighting.base import Weighting


@keras.saving.register_keras_serializable(package="joint_keras")
class DualProj(Weighting):
    """Projects the mean task gradient onto the cone of directions that
    conflict with no task.

    The shared variables get the projection of `g0 = (1/K) sum_k g_k` onto
    the dual cone `{x : g_k . x >= 0 for all k}`: the closest direction to
    the mean gradient along which, to first order, no task's loss
    increases. With non-conflicting gradients it is the mean itself. The
    projection is `J^T v`, `v = argmin_{v >= 1/K} v^T G v` (the dual
    problem, solved exactly on the Gram matrix `G` by
    `joint_keras.linalg.project_to_dual_cone`). The other variables get
    their task's gradient.

    {{gradient_level_layouts}}

    References:
        Quinton, Rey. Jacobian Descent for Multi-Objective Optimization.
        arXiv:2406.16232, 2024.

    Args:
        **kwargs: `representation` (see `jk.weighting.Weighting`), `name`.
    """

    gradient_level = True

    def coefficients(self, gram, losses, indices, training):
        n = len(indices)
        mean = ops.ones((1, n), dtype=gram.dtype) / n
        a = project_to_dual_cone(gram, mean)[0]
        return Coefficients(a, ops.ones_like(a))
