"""`GradDrop`: gradient sign dropout (Chen et al.)."""

import keras
from keras import ops

from joint_keras._compile.checks import MAX_SEED
from joint_keras._compile.checks import check_number
from joint_keras.weighting.base import Weighting


@keras.saving.register_keras_serializable(package="joint_keras")
class GradDrop(Weighting):
    """Keeps, coordinate by coordinate, the gradients of one sign only.

    For each coordinate of the shared gradients, with `g_i` the tasks'
    gradients there, `P = (1 + sum_i g_i / sum_i |g_i|) / 2` is the purity
    of the positive sign; a uniform `U` is drawn, and task `i`'s gradient is
    kept where `(P > U and g_i > 0)` or `(P < U and g_i < 0)`, else
    multiplied by `leak` (the paper's leak, the same for every task; 0, the
    default, drops it). The update is the sum of what is kept. The paper
    applies it to the gradients at a shared activation: use
    `representation=` to do the same. It needs the gradients
    themselves, not only their Gram matrix.

    {{gradient_level_layouts}}

    References:
        Chen, Ngiam, Huang, Luong, Kretzschmar, Chai, Anguelov. Just Pick a
        Sign: Optimizing Deep Multitask Models with Gradient Sign Dropout.
        NeurIPS 2020.

    Args:
        leak: Float in [0, 1], the part of a dropped gradient kept.
            Defaults to 0.0.
        seed: Optional int seed of `U`, in [0, 2**31 - 1].
        **kwargs: `representation` (see `jk.weighting.Weighting`), `name`.
    """

    gradient_level = True

    def __init__(self, leak=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        owner = "jk.weighting.GradDrop"
        self.leak = check_number(leak, "leak", owner, minimum=0, maximum=1)
        self.seed = check_number(
            seed, "seed", owner, kind=int, minimum=0, maximum=MAX_SEED, optional=True
        )
        self.seed_generator = keras.random.SeedGenerator(self.seed)

    def combine(self, jacobians, losses, indices, training):
        n = len(indices)
        updates = []
        for jacobian in jacobians:
            total = ops.sum(jacobian, axis=0)
            spread = ops.sum(ops.abs(jacobian), axis=0)
            purity = 0.5 * (1.0 + ops.divide_no_nan(total, spread))
            draw = keras.random.uniform(ops.shape(total), seed=self.seed_generator)
            keep = ops.logical_or(
                ops.logical_and(purity > draw, jacobian > 0),
                ops.logical_and(purity < draw, jacobian < 0),
            )
            kept = ops.where(keep, 1.0, self.leak)
            updates.append(ops.sum(ops.cast(kept, jacobian.dtype) * jacobian, axis=0))
        return updates, ops.ones((n,), "float32")

    def get_config(self):
        return {**super().get_config(), "leak": self.leak, "seed": self.seed}
