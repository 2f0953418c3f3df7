"""`NashMTL`: multi-task learning as a bargaining game (Navon et al.)."""

import keras
from keras import ops

from joint_keras.linalg import nash_mtl_weights
from joint_keras.linalg import solved
from joint_keras.weighting.base import Coefficients
from joint_keras.weighting.base import Weighting


@keras.saving.register_keras_serializable(package="joint_keras")
class NashMTL(Weighting):
    """Moves along the Nash bargaining solution of the tasks.

    The shared variables get `d = J^T alpha` with `alpha > 0` solving
    `G alpha = 1 / alpha` (elementwise): `d` maximizes
    `sum_k log(g_k . d)` in a ball, so every task gets a share of the
    improvement, and `g_k . d = 1 / alpha_k`, `|d|^2 = K`. Solved on the
    Gram matrix by `joint_keras.linalg.nash_mtl_weights` (Newton's method,
    exact to float32), where the authors' code runs a few convex-concave steps of
    cvxpy. Their code divides `G` by its Frobenius norm for conditioning
    and multiplies it back in the constraint, so its solution is this one;
    the solver here rescales internally. As in the paper, `alpha_k`
    scales as `1 / |g_k|`, so the update does not depend on the tasks'
    loss scales, and `|d| = sqrt(K)` whatever the gradients' size. The
    authors' `NashMTL.backward` then clips the norm of the gradient of all
    the shared parameters together to `max_norm` (1.0 by default),
    leaving the task-specific gradients as they are; this class does not,
    and Keras's optimizer options do not reproduce it: `clipnorm` clips
    each variable's gradient on its own, and `global_clipnorm` the norm of
    every gradient the optimizer applies, the task-specific ones included.

    A solution exists exactly when the gradients are not
    Pareto-stationary (0 not in their convex hull), where no direction
    improves every task and the paper's method stops. There (and for
    all-zero gradients), detected by `alpha` failing its equation by more
    than 1%, the shared variables get no update. The other variables get
    their task's gradient (the authors' code multiplies the losses by
    `alpha`, so their task-specific variables get `alpha_k` times theirs).
    Not included: the authors' `update_weights_every` (reusing `alpha`).

    {{gradient_level_layouts}}

    References:
        Navon, Shamsian, Achituve, Maron, Kawaguchi, Chechik, Fetaya.
        Multi-Task Learning as a Bargaining Game. ICML 2022.

    Args:
        **kwargs: `representation` (see `jk.weighting.Weighting`), `name`.
    """

    gradient_level = True

    def coefficients(self, gram, losses, indices, training):
        alpha = nash_mtl_weights(gram)
        a = ops.where(solved(gram, alpha), alpha, 0.0)
        return Coefficients(a, ops.ones_like(a))
