"""`Fixed`: the weighted sum with the compiled (live) loss weights."""

import keras

from joint_keras.weighting.base import Weighting


@keras.saving.register_keras_serializable(package="joint_keras")
class Fixed(Weighting):
    """The default: `loss = sum_k w_k * L_k` with `w` the compiled weights.

    `w` is the variable `model.loss_weights_variable`, so it can be changed
    during training without recompiling (see
    `jk.callbacks.LossWeightScheduler`).
    """
