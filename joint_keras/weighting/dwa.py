"""`DWA`: dynamic weight average (Liu et al.)."""

import keras
from keras import ops

from joint_keras._compile.checks import check_number
from joint_keras.weighting.base import Weighting


@keras.saving.register_keras_serializable(package="joint_keras")
class DWA(Weighting):
    """Weights tasks by how slowly their loss went down over the last epochs.

    With `Lbar_k(e)` the mean training loss of task `k` in epoch `e`:
    `r_k = Lbar_k(e-1) / Lbar_k(e-2)` and
    `w_k = K * softmax(r / temperature)_k`, times the compiled weight.
    The first two epochs use `w_k = 1`. A task whose loss stalls
    (`r_k` near 1 or above) gains weight.

    Layouts: every one. The epoch means count the steps in which a task had
    a loss (a batch with no labelled row for it is left out, as is a step
    with non-finite losses); `alternate` stages use the epoch's weights of
    their tasks.

    References:
        Liu, Johns, Davison. End-to-End Multi-Task Learning with Attention.
        CVPR 2019.

    Args:
        temperature: Positive finite float. Defaults to 2.0.
    """

    needs_epoch_end = True

    def __init__(self, temperature=2.0, **kwargs):
        super().__init__(**kwargs)
        self.temperature = check_number(
            temperature,
            "temperature",
            "jk.weighting.DWA",
            minimum=0,
            exclusive_minimum=True,
        )

    def build_state(self, num_tasks):
        def state(name, value=0.0):
            return self.add_weight(
                shape=(num_tasks,),
                initializer=keras.initializers.Constant(value),
                trainable=False,
                name=name,
            )

        self.loss_sum = state("loss_sum")
        self.loss_count = state("loss_count")
        self.previous = state("previous_epoch_loss")
        self.before_previous = state("before_previous_epoch_loss")
        self.epoch_weights = state("epoch_weights", 1.0)

    def step_weights(self, losses, indices, training):
        if training:
            self.scatter(
                self.loss_sum, indices, self.gather(self.loss_sum, indices) + losses
            )
            self.scatter(
                self.loss_count, indices, self.gather(self.loss_count, indices) + 1.0
            )
        weights = self.gather(self.epoch_weights, indices)
        return self.gather(self.base_weights, indices) * weights

    def on_epoch_end(self):
        loss_sum, count = self.loss_sum.value, self.loss_count.value
        previous, before_previous = self.previous.value, self.before_previous.value
        seen = ops.greater(count, 0)
        before_previous = ops.where(seen, previous, before_previous)
        previous = ops.where(seen, ops.divide_no_nan(loss_sum, count), previous)
        ratio = ops.divide_no_nan(previous, before_previous)
        num_tasks = ops.cast(ops.shape(ratio)[0], ratio.dtype)
        dwa = num_tasks * self.softmax(ratio / self.temperature)
        ready = ops.all(ops.greater(before_previous, 0))
        self.epoch_weights.assign(ops.where(ready, dwa, ops.ones_like(dwa)))
        self.before_previous.assign(before_previous)
        self.previous.assign(previous)
        self.loss_sum.assign(ops.zeros_like(loss_sum))
        self.loss_count.assign(ops.zeros_like(count))

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}
