"""`GradNorm`: gradient normalization (Chen et al.)."""

import keras
from keras import ops

from joint_keras._compile.checks import check_number
from joint_keras.weighting.base import Coefficients
from joint_keras.weighting.base import Weighting


@keras.saving.register_keras_serializable(package="joint_keras")
class GradNorm(Weighting):
    """Balances the tasks' gradient norms on the shared variables.

    Task weights `w` (times the compiled weights) are learned so that each
    task's gradient norm `G_k = |grad (w_k L_k)|` on the shared variables
    tracks `mean(G) * r_k^alpha`, where `r_k` is the task's relative inverse
    training rate `(L_k / L_k(0)) / mean_j (L_j / L_j(0))`: a task that
    trains slower gets a larger gradient. At each training step, `w` takes
    one plain gradient step on `sum_k |G_k - target_k|` (targets held
    constant; `dG_k / dw_k = G_k / w_k`), is floored at 1e-6 and is
    renormalized to sum to the number of tasks in the step; the new `w`
    weights the next step. The model update is the gradient of
    `sum_k w_k L_k`. `L_k(0)` is the task's loss at its first training
    step.

    {{gradient_level_layouts}}

    References:
        Chen, Badrinarayanan, Lee, Rabinovich. GradNorm: Gradient
        Normalization for Adaptive Loss Balancing in Deep Multitask
        Networks. ICML 2018.

    Args:
        alpha: Non-negative finite float, the restoring force. Defaults to
            1.5.
        learning_rate: Positive finite float, the step size for `w`.
            Defaults to 0.025.
        **kwargs: `representation` (see `jk.weighting.Weighting`), `name`.
    """

    gradient_level = True

    def __init__(self, alpha=1.5, learning_rate=0.025, **kwargs):
        super().__init__(**kwargs)
        owner = "jk.weighting.GradNorm"
        self.alpha = check_number(alpha, "alpha", owner, minimum=0)
        self.learning_rate = check_number(
            learning_rate, "learning_rate", owner, minimum=0, exclusive_minimum=True
        )

    def build_state(self, num_tasks):
        self.task_scales = self.add_weight(
            shape=(num_tasks,), initializer="ones", trainable=False, name="task_scales"
        )
        self.initial_losses = self.add_weight(
            shape=(num_tasks,),
            initializer="zeros",
            trainable=False,
            name="initial_losses",
        )

    def step_weights(self, losses, indices, training):
        if training:
            initial = self.gather(self.initial_losses, indices)
            self.scatter(
                self.initial_losses,
                indices,
                ops.where(ops.equal(initial, 0.0), losses, initial),
            )
        scales = self.gather(self.task_scales, indices)
        return self.gather(self.base_weights, indices) * scales

    def coefficients(self, gram, losses, indices, training):
        n = len(indices)
        ones = ops.ones((n,), gram.dtype)
        if not training:
            return Coefficients(ones, ones)
        norms = ops.sqrt(ops.maximum(ops.diagonal(gram), 0.0))
        rates = ops.divide_no_nan(
            ops.cast(losses, gram.dtype), self.gather(self.initial_losses, indices)
        )
        relative = ops.divide_no_nan(rates, ops.mean(rates))
        target = ops.mean(norms) * ops.power(relative, self.alpha)
        w = self.gather(self.task_scales, indices)
        grad = ops.sign(norms - target) * ops.divide_no_nan(norms, w)
        w = ops.maximum(w - self.learning_rate * grad, 1e-6)
        self.scatter(self.task_scales, indices, w * n / ops.sum(w))
        return Coefficients(ones, ones)

    def get_config(self):
        return {
            **super().get_config(),
            "alpha": self.alpha,
            "learning_rate": self.learning_rate,
        }
