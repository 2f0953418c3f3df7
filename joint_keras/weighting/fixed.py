"""`Fixed`: the weighted sum with the compiled (live) loss weights."""

import keras

from joint_keras.weighting.base import Weighting


@keras.saving.register_keras_serializable(package="joint_keras")
class Fixed(Weighting):
    """The default: `loss = sum_k w_k * L_k` with `w` the compiled weights.

    `w` is the strategy's variable `base_weights`, which the model exposes
    as `model.task_weights_variable` (in `model.task_names` order), so it
    can be changed during training without recompiling: with
    `model.set_task_weights` (checked as `compile()` checks the weights) or
    `jk.callbacks.LossWeightScheduler`, which calls it.

    Layouts: every one (no state).
    """

    runs_per_presence = False
