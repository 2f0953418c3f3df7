"""`FairGrad`: alpha-fair resource allocation among tasks (Ban & Ji)."""

import keras
from keras import ops

from joint_keras._compile.checks import check_number
from joint_keras.linalg import fairgrad_weights
from joint_keras.linalg import solved
from joint_keras.weighting.base import Coefficients
from joint_keras.weighting.base import Weighting


@keras.saving.register_keras_serializable(package="joint_keras")
class FairGrad(Weighting):
    """Shares the loss decrease among tasks by alpha-fair utility.

    The update `d = J^T w` maximizes `sum_k (g_k . d)^(1 - alpha) /
    (1 - alpha)` (the alpha-fair utility of the tasks' first-order loss
    decreases) in a ball; its stationarity condition is
    `G w = w^(-1/alpha)` elementwise, `w > 0`, solved on the Gram matrix
    by `joint_keras.linalg.fairgrad_weights` (Newton's method, exact to
    float32; the authors' code runs scipy's `least_squares`). `alpha = 1` is
    Nash-MTL's equation (proportional fairness), `alpha -> inf` tends to
    max-min fairness, `alpha -> 0` to the plain sum's utilitarian share.
    Like the authors' code, `G` is not normalized: `w` scales as
    `G^(-alpha / (1 + alpha))` (their code then multiplies the update by
    `K` and clips its norm to 1; LibMTL's does neither).

    A solution exists exactly when the gradients are not
    Pareto-stationary; there (and for all-zero gradients), detected by `w`
    failing its equation by more than 1%, the shared variables get no
    update. The other variables get their task's gradient, as in the
    authors' code (LibMTL multiplies the losses by `w` instead).

    {{gradient_level_layouts}}

    References:
        Ban, Ji. Fair Resource Allocation in Multi-Task Learning.
        ICML 2024.

    Args:
        alpha: Positive finite float, the fairness parameter. Defaults to 1.0,
            the default of the authors' code and of LibMTL (their scripts
            use 2.0 on several benchmarks).
        **kwargs: `representation` (see `jk.weighting.Weighting`), `name`.
    """

    gradient_level = True

    def __init__(self, alpha=1.0, **kwargs):
        super().__init__(**kwargs)
        self.alpha = check_number(
            alpha, "alpha", "jk.weighting.FairGrad", minimum=0, exclusive_minimum=True
        )

    def coefficients(self, gram, losses, indices, training):
        w = fairgrad_weights(gram, self.alpha)
        a = ops.where(solved(gram, w, 1.0 / self.alpha), w, 0.0)
        return Coefficients(a, ops.ones_like(a))

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha}
