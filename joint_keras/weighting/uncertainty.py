"""`Uncertainty`: homoscedastic-uncertainty weighting (Kendall et al.)."""

import keras
from keras import ops

from joint_keras._compile.checks import check_number
from joint_keras.weighting.base import Weighting


@keras.saving.register_keras_serializable(package="joint_keras")
class Uncertainty(Weighting):
    """Learns one log-variance `s_k` per task along with the models.

    `loss = sum_k w_k * (exp(-s_k) * L_k / 2 + s_k / 2)`, with `w` the
    compiled weights. A task whose loss stays large gets a large `s_k`, so
    its weight `exp(-s_k) / 2` shrinks; the `s_k / 2` term stops all
    weights from going to 0. The `s_k` are trainable variables, updated by
    the optimizer of the first submodel when there is one per submodel.

    Layouts: every one. The log-variances get the gradient of every term
    they weigh, routed or not, and in an `alternate` stage that of the
    stage's tasks; a task absent from a step (no target, or no labelled row
    in its batch), or a step with non-finite losses, leaves its entry and
    its optimizer moments as they were.

    References:
        Kendall, Gal, Cipolla. Multi-Task Learning Using Uncertainty to
        Weigh Losses for Scene Geometry and Semantics. CVPR 2018.

    Args:
        initial_log_variance: Finite float, the starting `s_k`. Defaults to
            0.0.
    """

    runs_per_presence = False

    def __init__(self, initial_log_variance=0.0, **kwargs):
        super().__init__(**kwargs)
        self.initial_log_variance = check_number(
            initial_log_variance, "initial_log_variance", "jk.weighting.Uncertainty"
        )

    def build_state(self, num_tasks):
        self.log_variances = self.add_weight(
            shape=(num_tasks,),
            initializer=keras.initializers.Constant(self.initial_log_variance),
            trainable=True,
            name="log_variances",
        )

    def step_weights(self, losses, indices, training):
        s = self.gather(self.log_variances, indices)
        return self.gather(self.base_weights, indices) * 0.5 * ops.exp(-s)

    def extra_loss(self, indices):
        s = self.gather(self.log_variances, indices)
        return ops.sum(self.gather(self.base_weights, indices) * 0.5 * s)

    def get_config(self):
        return {
            **super().get_config(),
            "initial_log_variance": self.initial_log_variance,
        }
