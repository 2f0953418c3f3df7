"""`DBMTL`: dual-balancing multi-task learning (Lin et al.)."""

import keras
from keras import ops

from joint_keras._compile.checks import check_number
from joint_keras.weighting.base import Coefficients
from joint_keras.weighting.base import Weighting

EPSILON = 1e-8  # added to the losses, as in LibMTL


@keras.saving.register_keras_serializable(package="joint_keras")
class DBMTL(Weighting):
    """Balances the tasks' loss scales and gradient magnitudes.

    Loss-scale balancing: each task's loss `L_k` is replaced by
    `log(L_k + 1e-8)` (times its compiled weight), whose gradient is
    `g_k / (L_k + 1e-8)`: the other (task-specific) variables get that.
    Gradient-magnitude balancing, on the shared variables: with `h_k` an
    exponential moving average of `|grad log L_k|`,
    `h_k <- beta_t h_k + (1 - beta_t) |grad log L_k|`,
    `beta_t = beta / t^beta_sigma` (`t` the task's step count, `h` starting
    at 0), the shared variables get
    `sum_k (max_j h_j / h_k) grad log L_k`: every task's log-loss gradient
    scaled to the largest norm (so the compiled weights cancel there).
    The per-task gradient norms come from the Gram matrix, so this is a
    gradient-level strategy. The paper (and LibMTL) average the gradient
    vectors themselves and combine the averages, which needs the past
    gradients; here the average is of their norms, and the update
    combines this step's gradients. Losses must be positive (negative
    ones count as 0). `h` and the step counts change in training steps
    only (not when all gradients are zero, a skipped step); a task absent
    from a step keeps its own.

    {{gradient_level_layouts}}

    References:
        Lin, Jiang, Ye, Zhang, Chen, Chen, Liu, Tsang, Kwok.
        Dual-Balancing for Multi-Task Learning. arXiv:2308.12029, 2023.

    Args:
        beta: Float in [0, 1), the EMA rate. Defaults to 0.9 (LibMTL's).
        beta_sigma: Non-negative finite float, the decay of `beta` over
            steps. Defaults to 0.0 (LibMTL's: a constant `beta`).
        **kwargs: `representation` (see `jk.weighting.Weighting`), `name`.
    """

    gradient_level = True

    def __init__(self, beta=0.9, beta_sigma=0.0, **kwargs):
        super().__init__(**kwargs)
        owner = "jk.weighting.DBMTL"
        self.beta = check_number(
            beta, "beta", owner, minimum=0, maximum=1, exclusive_maximum=True
        )
        self.beta_sigma = check_number(beta_sigma, "beta_sigma", owner, minimum=0)

    def build_state(self, num_tasks):
        def state(name):
            return self.add_weight(
                shape=(num_tasks,), initializer="zeros", trainable=False, name=name
            )

        self.norm_average = state("norm_average")
        self.steps = state("steps")

    def coefficients(self, gram, losses, indices, training):
        scale = 1.0 / (ops.maximum(ops.cast(losses, gram.dtype), 0.0) + EPSILON)
        norms = ops.sqrt(ops.maximum(ops.diagonal(gram), 0.0)) * scale
        steps = self.gather(self.steps, indices) + 1.0
        rate = self.beta / steps**self.beta_sigma
        average = self.gather(self.norm_average, indices)
        average = norms + rate * (average - norms)
        if training:
            skipped = ops.logical_not(ops.any(gram != 0.0))
            for variable, new in ((self.norm_average, average), (self.steps, steps)):
                old = self.gather(variable, indices)
                self.scatter(variable, indices, ops.where(skipped, old, new))
        balance = ops.divide_no_nan(ops.max(average), average)
        return Coefficients(balance * scale, scale)

    def get_config(self):
        return {
            **super().get_config(),
            "beta": self.beta,
            "beta_sigma": self.beta_sigma,
        }
