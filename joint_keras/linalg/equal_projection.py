"""The direction at equal angles to the task gradients (IMTL-G, ConFIG).

With `U` the unit task gradients `u_k = g_k / |g_k|` as rows, the
direction `x = U^+ 1` has `u_k . x = 1` for every task: no task is
favoured, whatever the scale of its gradient. From the Gram matrix it is
`x = J^T b`, `b = D^-1 C^+ 1`, with `D = diag(|g_k|)` and `C` the
correlation matrix; IMTL-G normalizes `b` to sum 1, ConFIG scales `x` by
the gradients' projections onto it.

References:
    Liu, Li, Kuang, Xue, Chen, Yang, Liao, Zhang. Towards Impartial
    Multi-task Learning. ICLR 2021.

    Liu, Chu, Thuerey. ConFIG: Towards Conflict-free Training of Physics
    Informed Neural Networks. ICLR 2025 (arXiv:2408.11104).
"""

from keras import ops

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
