"""`PCGrad`: projecting conflicting gradients (Yu et al.)."""

import keras
from keras import ops

from joint_keras.weighting.base import Coefficients
from joint_keras.weighting.base import Weighting


@keras.saving.register_keras_serializable(package="joint_keras")
class PCGrad(Weighting):
    """Removes from each task's gradient its conflict with the others.

    For each task `i` (on the shared variables), in a random order of the
    other tasks `j`: if `g_i . g_j < 0`, `g_i <- g_i - (g_i . g_j) /
    |g_j|^2 g_j`. The update is the sum of the projected gradients. Worked
    out on the Gram matrix of the gradients (each projected gradient is a
    combination of the originals), so its cost does not grow with the
    number of shared parameters.

    References:
        Yu, Kumar, Gupta, Levine, Hausman, Finn. Gradient Surgery for
        Multi-Task Learning. NeurIPS 2020.

    Args:
        seed: Optional int seed of the random order.
        **kwargs: `representation` (see `jk.weighting.Weighting`), `name`.
    """

    gradient_level = True

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def coefficients(self, gram, losses, indices, training):
        n = len(indices)
        order = keras.random.shuffle(ops.arange(n), seed=self.seed_generator)
        eye = ops.eye(n, dtype=gram.dtype)
        rows = []
        for i in range(n):
            c = eye[i]
            for t in range(n):
                j = order[t]
                column = ops.take(gram, j, axis=1)
                dot = ops.sum(c * column)
                norm = ops.take(column, j)
                conflict = ops.logical_and(ops.less(dot, 0.0), ops.not_equal(j, i))
                step = ops.where(conflict, ops.divide_no_nan(dot, norm), 0.0)
                c = c - step * ops.one_hot(j, n, dtype=gram.dtype)
            rows.append(c)
        a = ops.sum(ops.stack(rows), axis=0)
        return Coefficients(a, ops.ones((n,), gram.dtype))

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}
