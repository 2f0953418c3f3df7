"""`ConFIG`: conflict-free inverse gradients (Liu et al.)."""

import keras
from keras import ops

from joint_keras.linalg import equal_projection_weights
from joint_keras.weighting.base import Coefficients
from joint_keras.weighting.base import Weighting


@keras.saving.register_keras_serializable(package="joint_keras")
class ConFIG(Weighting):
    """Moves along the direction at equal angles to every task gradient,
    as far as the gradients project onto it.

    With `U` the unit task gradients `u_k = g_k / |g_k|` as rows, the
    direction is `x = U^+ 1` (the paper's `[u_1, ..., u_K]^-T 1`, by the
    pseudo-inverse, as in the authors' code): `u_k . x = 1` for every task,
    so no task conflicts with it. Its length is the sum of the gradients'
    projections onto it: the update is `(sum_k g_k . x / |x|) x / |x|`.
    From the Gram matrix: `x = J^T b`, `b = D^-1 C^+ 1` with `D = diag(|g_k|)`
    and `C` the correlation matrix (see
    `joint_keras.linalg.equal_projection_weights`; IMTL-G's direction,
    scaled differently), so the coefficients are
    `a = (1^T G b / b^T G b) b`. Zero gradients are left out, as the
    authors' code does; all-zero gradients give zero coefficients. The
    other variables get their task's gradient. Equal preference weights
    (`1`); the paper's momentum variant (M-ConFIG) is not included.

    {{gradient_level_layouts}}

    References:
        Liu, Chu, Thuerey. ConFIG: Towards Conflict-free Training of
        Physics Informed Neural Networks. ICLR 2025 (arXiv:2408.11104).

    Args:
        **kwargs: `representation` (see `jk.weighting.Weighting`), `name`.
    """

    gradient_level = True

    def coefficients(self, gram, losses, indices, training):
        b = equal_projection_weights(gram)
        gb = ops.matmul(gram, b[:, None])[:, 0]
        a = ops.divide_no_nan(ops.sum(gb), ops.sum(b * gb)) * b
        return Coefficients(a, ops.ones_like(a))
