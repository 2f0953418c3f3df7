"""`MGDA`: the multiple-gradient descent algorithm (Sener & Koltun)."""

import keras
from keras import ops

from joint_keras._compile.checks import check_number
from joint_keras.linalg import min_norm_weights
from joint_keras.linalg import normalize_gram
from joint_keras.weighting.base import Coefficients
from joint_keras.weighting.base import Weighting


@keras.saving.register_keras_serializable(package="joint_keras")
class MGDA(Weighting):
    """Moves along the minimum-norm convex combination of the task gradients.

    The shared variables get `sum_k w_k g_k` with `w` the point of the
    simplex minimizing `|sum_k w_k g_k|^2`: a direction that decreases every
    task's loss, or zero at a Pareto-stationary point. The other variables
    get their task's gradient. `w` is solved on the Gram matrix by
    `joint_keras.linalg.min_norm_weights`: exactly up to 10 tasks (every
    support at once, one batched inverse), by Lawson and Hanson's active-set
    method beyond. The solution does not depend on the scale of the Gram matrix.

    {{gradient_level_layouts}}

    References:
        Sener, Koltun. Multi-Task Learning as Multi-Objective Optimization.
        NeurIPS 2018.

    Args:
        norm_eps: Non-negative finite float. When `norm_eps` or `reg_eps` is
            positive, the Gram matrix is first regularized as TorchJD
            regularizes it (`joint_keras.linalg.normalize_gram`): divided by
            its trace (the sum of the squared gradient norms), or replaced by
            the zero matrix when that trace is not above `norm_eps` (then
            every `w` of the simplex is a minimizer and one with a single
            non-zero weight is returned), and `reg_eps` is added to its
            diagonal.
            Dividing by the trace alone changes nothing. Defaults to 0.0:
            with both 0, the Gram matrix is used as it is (the exact
            problem).
        reg_eps: Non-negative finite float, the ridge added to the diagonal
            of the normalized Gram matrix (see `norm_eps`). Defaults to
            0.0.
        **kwargs: `representation` (see `jk.weighting.Weighting`), `name`.
    """

    gradient_level = True

    def __init__(self, norm_eps=0.0, reg_eps=0.0, **kwargs):
        super().__init__(**kwargs)
        owner = "jk.weighting.MGDA"
        self.norm_eps = check_number(norm_eps, "norm_eps", owner, minimum=0)
        self.reg_eps = check_number(reg_eps, "reg_eps", owner, minimum=0)

    def coefficients(self, gram, losses, indices, training):
        if self.norm_eps or self.reg_eps:
            gram = normalize_gram(gram, self.norm_eps, self.reg_eps)
        w = min_norm_weights(gram)
        return Coefficients(w, ops.ones_like(w))

    def get_config(self):
        return {
            **super().get_config(),
            "norm_eps": self.norm_eps,
            "reg_eps": self.reg_eps,
        }
