"""`CAGrad`: conflict-averse gradient descent (Liu et al.)."""

import keras
from keras import ops

from joint_keras._compile.checks import check_number
from joint_keras.linalg import cagrad_coefficients
from joint_keras.weighting.base import Coefficients
from joint_keras.weighting.base import Weighting


@keras.saving.register_keras_serializable(package="joint_keras")
class CAGrad(Weighting):
    """Stays near the average gradient while improving the worst task.

    With `g0` the mean task gradient and `phi = c^2 |g0|^2`, find
    `w` on the simplex minimizing `g_w . g0 + sqrt(phi) |g_w|`
    (`g_w = sum_k w_k g_k`), and move along
    `(g0 + sqrt(phi) / |g_w| g_w) / (1 + c^2)` (the authors' rescaling).
    `c = 0` is plain averaging. Solved on the Gram matrix by
    `joint_keras.linalg.cagrad_coefficients`: exactly up to 10 tasks (every
    support at once), by a monotone active-set method beyond.

    {{gradient_level_layouts}}

    References:
        Liu, Liu, Jin, Stone, Liu. Conflict-Averse Gradient Descent for
        Multi-task Learning. NeurIPS 2021.

    Args:
        c: Non-negative finite float. Defaults to 0.4.
        **kwargs: `representation` (see `jk.weighting.Weighting`), `name`.
    """

    gradient_level = True

    def __init__(self, c=0.4, **kwargs):
        super().__init__(**kwargs)
        self.c = check_number(c, "c", "jk.weighting.CAGrad", minimum=0)

    def coefficients(self, gram, losses, indices, training):
        a = cagrad_coefficients(gram, self.c)
        return Coefficients(a, ops.ones_like(a))

    def get_config(self):
        return {**super().get_config(), "c": self.c}
