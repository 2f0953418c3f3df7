"""`IMTLG`: impartial multi-task learning, gradient part (Liu et al.)."""

import keras
from keras import ops

from joint_keras.weighting.base import Coefficients
from joint_keras.weighting.base import Weighting

# Eigenvalues of the gradients' correlation matrix below this fraction of
# the largest count as zero: float32 rounding of the Gram matrix alone
# moves them by about 1e-7 times the number of tasks.
RCOND = 1e-5


def equal_projection_weights(gram):
    """`b` `(K,)` with `u_k . (J^T b) = 1` for every unit gradient `u_k`.

    With `D = diag(|g_k|)` and `C = D^-1 G D^-1` the gradients' correlation
    matrix, `b = D^-1 C^+ 1`: `J^T b = U^T C^+ 1 = U^+ 1` (`U` the unit
    gradients as rows), the minimum-norm solution of `U x = 1`. When `1` is
    not in the range of `C` (linearly dependent unit gradients that no
    direction meets at equal angles), its least-squares solution. Zero
    gradients get 0. Shared by `IMTLG` and `ConFIG`.
    """
    norms = ops.sqrt(ops.maximum(ops.diagonal(gram), 0.0))
    corr = ops.divide_no_nan(gram, norms[:, None] * norms[None, :])
    ones = ops.ones((ops.shape(gram)[0], 1), dtype=gram.dtype)
    return ops.divide_no_nan(ops.matmul(ops.pinv(corr, rcond=RCOND), ones)[:, 0], norms)


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
    (see `equal_projection_weights`). For linearly dependent gradients the
    paper's system is singular; the pseudo-inverse gives a solution when
    one exists (TorchJD takes `G^+ |g|` instead: another solution, that
    differs only there). Zero weights when `sum(b)` vanishes. The other
    variables get their task's gradient, as in the paper (IMTL-L, the loss
    part, is not included).

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
