"""`RLW`: random loss weighting (Lin et al.)."""

import keras

from joint_keras._compile.checks import MAX_SEED
from joint_keras._compile.checks import check_number
from joint_keras.weighting.base import Weighting


@keras.saving.register_keras_serializable(package="joint_keras")
class RLW(Weighting):
    """Draws new task weights at every training step.

    `w = K * softmax(e)`, `e ~ Normal(0, 1)^K`, times the compiled weights;
    evaluation uses the compiled weights. A surprisingly strong baseline:
    on average every task is weighted equally, and no task can dominate
    for long.

    {{one_update_layouts}}

    References:
        Lin, Ye, Xu, Shi, Zhang. Reasonable Effectiveness of Random
        Weighting: A Litmus Test for Multi-Task Learning. TMLR 2022.

    Args:
        seed: Optional int seed, in [0, 2**31 - 1].
    """

    weighs_tasks_together = True

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        owner = "jk.weighting.RLW"
        self.seed = check_number(
            seed, "seed", owner, kind=int, minimum=0, maximum=MAX_SEED, optional=True
        )
        self.seed_generator = keras.random.SeedGenerator(self.seed)

    def step_weights(self, losses, indices, training):
        base = self.gather(self.base_weights, indices)
        if not training:
            return base
        draw = keras.random.normal((len(indices),), seed=self.seed_generator)
        return base * len(indices) * self.softmax(draw)

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}
