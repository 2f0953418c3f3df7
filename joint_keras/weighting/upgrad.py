"""`UPGrad`: unconflicting projection of gradients (Quinton & Rey)."""

import keras
from keras import ops

from joint_keras.weighting.base import Coefficients
from joint_keras.weighting.base import Weighting


def project_to_dual_cone(gram, sweeps):
    """Row `i`: `argmin_{v >= e_i} v^T gram v`, by projected coordinate
    descent (exact per coordinate), all rows at once."""
    n = ops.shape(gram)[0]
    lower = ops.eye(n, dtype=gram.dtype)
    diagonal = ops.diagonal(gram)

    def sweep(_, v):
        for j in range(n):
            gv_j = ops.matmul(v, gram[:, j])  # (n,) = (v gram)_{:, j}
            updated = v[:, j] - ops.divide_no_nan(gv_j, diagonal[j])
            column = ops.maximum(updated, lower[:, j])
            v = ops.concatenate([v[:, :j], column[:, None], v[:, j + 1 :]], axis=1)
        return v

    return ops.fori_loop(0, sweeps, sweep, lower)


@keras.saving.register_keras_serializable(package="joint_keras")
class UPGrad(Weighting):
    """Averages the task gradients after projecting each onto the cone of
    directions that conflict with none of them.

    Each `g_i` is projected onto the dual cone `{x : g_k . x >= 0 for all k}`
    of the task gradients; the update is the mean of the projections. No
    task's loss increases to first order, and with non-conflicting
    gradients the update is the plain mean. The projections are solved in
    the dual, on the Gram matrix: `v_i = argmin_{v >= e_i} v^T G G^T v`,
    `a = mean_i v_i`.

    References:
        Quinton, Rey. Jacobian Descent for Multi-Objective Optimization.
        arXiv:2406.16232, 2024.

    Args:
        sweeps: Int, coordinate-descent sweeps of the dual solver.
            Defaults to 50.
        **kwargs: `representation` (see `jk.weighting.Weighting`), `name`.
    """

    gradient_level = True

    def __init__(self, sweeps=50, **kwargs):
        super().__init__(**kwargs)
        self.sweeps = int(sweeps)

    def coefficients(self, gram, losses, indices, training):
        v = project_to_dual_cone(gram, self.sweeps)
        a = ops.mean(v, axis=0)
        return Coefficients(a, ops.ones_like(a))

    def get_config(self):
        return {**super().get_config(), "sweeps": self.sweeps}
