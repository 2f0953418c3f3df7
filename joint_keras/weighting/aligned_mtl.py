"""`AlignedMTL`: aligning the task gradients' components (Senushkin et al.)."""

import keras
import numpy as np
from keras import ops

from joint_keras.weighting.base import Coefficients
from joint_keras.weighting.base import Weighting

SCALE_MODES = ("min", "median", "rmse")


@keras.saving.register_keras_serializable(package="joint_keras")
class AlignedMTL(Weighting):
    """Makes the gradient system well conditioned before summing it.

    With `J = U S V^T` (task gradients as rows) and `G = J J^T = U S^2 U^T`,
    the aligned gradients are `J' = s U V^T`: every singular value set to
    the same `s`, so that no principal component of the gradients
    dominates and their condition number is 1. `J' = B J` with
    `B = s U S^-1 U^T`, computed from `G` by `keras.ops.eigh`; the update is
    the sum of the aligned gradients, `J'^T 1 = J^T (B 1)`, as in the
    authors' code (TorchJD takes the mean, `1/K`). Eigenvalues of `G` up to
    `K * eps * max(eigenvalue)` (float32 `eps`) are dropped, as in the
    authors' code (the rank-deficient case: `S^-1` is a pseudo-inverse).
    `s` is the smallest kept singular value (`scale_mode="min"`, the
    paper's), or from the median (lower median) or the mean of the kept
    eigenvalues (`"median"`, `"rmse"`: `s^2` is that value). All-zero
    gradients give zero coefficients. The other variables get their
    task's gradient.

    {{gradient_level_layouts}}

    References:
        Senushkin, Patakin, Kuznetsov, Konushin. Independent Component
        Alignment for Multi-Task Learning. CVPR 2023.

    Args:
        scale_mode: `"min"` (default), `"median"` or `"rmse"`.
        **kwargs: `representation` (see `jk.weighting.Weighting`), `name`.
    """

    gradient_level = True

    def __init__(self, scale_mode="min", **kwargs):
        super().__init__(**kwargs)
        if scale_mode not in SCALE_MODES:
            raise ValueError(
                f"`scale_mode` must be one of {SCALE_MODES}. "
                f"Received: scale_mode={scale_mode!r}"
            )
        self.scale_mode = scale_mode

    def coefficients(self, gram, losses, indices, training):
        n = len(indices)
        values, vectors = ops.eigh(gram)
        kept = values > ops.max(values) * n * float(np.finfo("float32").eps)
        kept = ops.logical_and(kept, values > 0.0)
        inverse_root = ops.where(kept, ops.rsqrt(ops.where(kept, values, 1.0)), 0.0)
        count = ops.sum(ops.cast(kept, "int32"))
        if self.scale_mode == "min":
            scale = ops.min(ops.where(kept, values, np.inf))
        elif self.scale_mode == "rmse":
            total = ops.sum(ops.where(kept, values, 0.0))
            scale = total / ops.cast(ops.maximum(count, 1), values.dtype)
        else:  # The kept values are the largest `count`; the lower median.
            position = n - count + (count - 1) // 2
            scale = ops.take(ops.sort(values), ops.clip(position, 0, n - 1))
        scale = ops.where(count > 0, scale, 0.0)
        ones = ops.ones((n, 1), dtype=gram.dtype)
        rows = ops.matmul(ops.transpose(vectors), ones) * inverse_root[:, None]
        a = ops.sqrt(scale) * ops.matmul(vectors, rows)[:, 0]
        return Coefficients(a, ops.ones((n,), gram.dtype))

    def get_config(self):
        return {**super().get_config(), "scale_mode": self.scale_mode}
