"""`PCGrad`: projecting conflicting gradients (Yu et al.)."""

import keras
from keras import ops

from joint_keras._compile.checks import MAX_SEED
from joint_keras._compile.checks import check_number
from joint_keras.weighting.base import Coefficients
from joint_keras.weighting.base import Weighting


@keras.saving.register_keras_serializable(package="joint_keras")
class PCGrad(Weighting):
    """Removes from each task's gradient its conflict with the others.

    For each task `i` (on the shared variables), in a random order of the
    other tasks `j`: if `g_i . g_j < 0`, `g_i <- g_i - (g_i . g_j) /
    |g_j|^2 g_j`. The update is the sum of the projected gradients. Each
    task draws its own order at every step, as in the paper's Algorithm 1
    (`shared_order=True`: one order for all tasks). Worked out on the Gram
    matrix of the gradients (each projected gradient is a combination of the
    originals), all tasks at once, so its cost does not grow with the number
    of shared parameters.

    {{gradient_level_layouts}}

    References:
        Yu, Kumar, Gupta, Levine, Hausman, Finn. Gradient Surgery for
        Multi-Task Learning. NeurIPS 2020.

    Args:
        seed: Optional int seed of the random orders, in [0, 2**31 - 1].
        shared_order: Bool. Defaults to `False`.
        **kwargs: `representation` (see `jk.weighting.Weighting`), `name`.
    """

    gradient_level = True

    def __init__(self, seed=None, shared_order=False, **kwargs):
        super().__init__(**kwargs)
        owner = "jk.weighting.PCGrad"
        self.seed = check_number(
            seed, "seed", owner, kind=int, minimum=0, maximum=MAX_SEED, optional=True
        )
        self.shared_order = check_number(shared_order, "shared_order", owner, kind=bool)
        self.seed_generator = keras.random.SeedGenerator(self.seed)

    def coefficients(self, gram, losses, indices, training):
        n = len(indices)
        shape = (1, n) if self.shared_order else (n, n)
        draws = keras.random.uniform(shape, seed=self.seed_generator)
        orders = ops.broadcast_to(ops.argsort(draws, axis=1), (n, n))
        # picks[i, t]: one-hot of the task row i projects on at turn t.
        picks = ops.one_hot(orders, n, dtype=gram.dtype)
        picked_gram = picks @ gram  # [i, t]: that task's row of the Gram
        not_self = ops.cast(ops.not_equal(orders, ops.arange(n)[:, None]), gram.dtype)
        squares = ops.sum(picks * ops.diagonal(gram), axis=2)  # |g_j|^2
        inverse_norms = ops.divide_no_nan(not_self, squares)
        rows = ops.eye(n, dtype=gram.dtype)  # row i: g_i's coefficients
        # Few dispatched ops per turn: eager PyTorch pays per op.
        for t in range(n):
            dots = ops.sum(rows * picked_gram[:, t], axis=1)
            step = -ops.relu(-dots) * inverse_norms[:, t]  # min(dots, 0) / |g_j|^2
            rows = rows - step[:, None] * picks[:, t]
        a = ops.sum(rows, axis=0)
        return Coefficients(a, ops.ones((n,), gram.dtype))

    def get_config(self):
        return {
            **super().get_config(),
            "seed": self.seed,
            "shared_order": self.shared_order,
        }
