"""Nash-MTL's and FairGrad's stationarity equations, by Newton's method.

FairGrad's weights solve `G w = w^(-1/alpha)` elementwise, `w > 0`, the
stationarity condition of the strictly convex
`w^T G w / 2 + sum_i phi(w_i)`, `phi' = -w^(-1/alpha)`; `alpha = 1` is
Nash-MTL's `G alpha = 1 / alpha`, whose update maximizes
`sum_i log(g_i . d)` over a ball. These are smooth, strictly convex
problems with a unique positive solution: a fixed number of Newton steps
on `log w` (quadratic convergence, positivity without a line search); any
`K`. A solution exists exactly when the gradients are not
Pareto-stationary; `solved` tells whether the returned weights solve their
equation.

References:
    Navon, Shamsian, Achituve, Maron, Kawaguchi, Chechik, Fetaya.
    Multi-Task Learning as a Bargaining Game. ICML 2022.

    Ban, Ji. Fair Resource Allocation in Multi-Task Learning. ICML 2024.
"""

from keras import ops

from joint_keras.linalg._common import _RIDGE
from joint_keras.linalg._common import _TINY
from joint_keras.linalg._common import _num_tasks

_NEWTON_STEPS = 10
# Bound on the Nash-MTL and FairGrad weights of a unit-trace Gram matrix.
_MAX_FAIR_WEIGHT = 1e15
# Largest relative violation of `alpha_i (G alpha)_i = 1` taken as solved.
# A solved problem is met to about 1e-5 in float32; without a solution
# (Pareto-stationary gradients) the solver's iterate is far off.
SOLVED_TOLERANCE = 1e-2


def solved(gram, weights, power=1.0):
    """Whether `weights` solve `(G w)_i w_i^power = 1` (`power = 1/alpha`
    for FairGrad's equation) to `SOLVED_TOLERANCE`."""
    products = ops.matmul(gram, weights[:, None])[:, 0] * weights**power
    return ops.max(ops.abs(products - 1.0)) < SOLVED_TOLERANCE


def nash_mtl_weights(gram, iterations=_NEWTON_STEPS):
    """Nash bargaining solution of the task gradients (Nash-MTL).

    Solves `(G alpha)_i = 1 / alpha_i`, `alpha > 0`: the update
    `d = J^T alpha` maximizes `sum_i log(g_i . d)` over a ball. `alpha`
    minimizes the strictly convex `alpha^T G alpha / 2 - sum_i log alpha_i`,
    found by Newton's method on `log alpha` (`fairgrad_weights` with
    `alpha = 1`). A solution exists, and is unique, exactly when the
    gradients are not Pareto-stationary (0 not in their convex hull), even
    if they are linearly dependent. The paper assumes the gradients
    linearly independent except at Pareto-stationary points, where its
    method stops; the authors' code keeps the previous weights when its
    solver fails. Here, at a Pareto-stationary point, the objective is
    unbounded below and the returned `alpha` (finite, large along a
    non-negative null vector of `G`, whose update `J^T alpha` is
    meaningless) solves nothing: check for Pareto-stationarity first, e.g.
    with `min_norm_weights`. `alpha` scales as `G^(-1/2)`.

    Args:
        gram: `(K, K)` Gram matrix of the task gradients, `K` static.
        iterations: Python int, Newton steps.

    Returns:
        `(K,)` positive weights.

    References:
        Navon, Shamsian, Achituve, Maron, Kawaguchi, Chechik, Fetaya.
        Multi-Task Learning as a Bargaining Game. ICML 2022.
    """
    return fairgrad_weights(gram, 1.0, iterations)


def fairgrad_weights(gram, alpha, iterations=_NEWTON_STEPS):
    """Weights of FairGrad's alpha-fair update.

    Solves `G w = w^(-1/alpha)` elementwise, `w > 0`: the stationarity
    condition of the strictly convex `w^T G w / 2 + sum_i phi(w_i)` with
    `phi' = -w^(-1/alpha)`. `alpha = 1` is Nash-MTL's equation; a larger
    `alpha` moves towards max-min fairness. Solved by a fixed number of
    Newton steps on `log w` with the Hessian
    `D G D + diag(w^(1 - 1/alpha)) / alpha`, `D = diag(w)` (exact at the
    solution, positive definite everywhere), from the solution for the
    diagonal of `G` rescaled along its ray. Each log-step `s` is taken as
    `s / (1 + |s| / 2)`: bounded by 2, so that a far start cannot
    overshoot, and equal to `s` to second order, so convergence stays
    quadratic. The 10 default steps reach float32 accuracy from that start
    (typical problems need 3 to 6) except on nearly Pareto-stationary
    gradients, whose solution float32 cannot determine anyway. A solution
    exists exactly when the gradients are not Pareto-stationary (see
    `nash_mtl_weights`); without one, `w` grows until bounded (1e15 for a
    unit-trace `G`) and the Hessian's diagonal, scaled by `1 + 1e-6`, stays
    invertible. `w` scales as `G^(-alpha / (1 + alpha))`.

    Args:
        gram: `(K, K)` Gram matrix of the task gradients, `K` static.
        alpha: Positive Python float.
        iterations: Python int, Newton steps.

    Returns:
        `(K,)` positive weights.

    References:
        Ban, Ji. Fair Resource Allocation in Multi-Task Learning.
        ICML 2024.
    """
    if not float(alpha) > 0:
        raise ValueError(f"`alpha` must be positive. Received: alpha={alpha!r}")
    p = 1.0 / float(alpha)
    k = _num_tasks(gram)
    trace = ops.trace(gram) + _TINY
    g = gram / trace
    eye = ops.eye(k, dtype=g.dtype)
    diagonal = ops.diagonal(g)[:, None]
    # Columns (K, 1) throughout. The solution for the diagonal of G, then
    # its best multiple t: t^(1+p) = sum(w^(1-p)) / w^T G w (bounded, for
    # the degenerate G without a solution).
    w = (diagonal + 1e-12) ** (-1.0 / (1.0 + p))
    t = ops.sum(w ** (1.0 - p)) / (ops.sum(w * (g @ w)) + _TINY)
    w = w * ops.clip(t, 1e-6, 1e6) ** (1.0 / (1.0 + p))

    def newton_step(_, w):
        # Without a solution w grows: this bound (a no-op in float32 below
        # 1e8) keeps it from overflowing.
        w = w / (1.0 + w / _MAX_FAIR_WEIGHT)
        wp = 1.0 if p == 1.0 else w ** (1.0 - p)
        # The Hessian, its diagonal scaled by 1 + 1e-6 (invertible in
        # float32 even when w grows along a null vector of G).
        scaled_diagonal = (1.0 + _RIDGE) * p * wp + _RIDGE * (w * w) * diagonal
        hessian = g * (w * w[:, 0][None, :]) + eye * scaled_diagonal
        step = ops.solve(hessian, wp - w * (g @ w))
        return w * ops.exp(step / (1.0 + 0.5 * abs(step)))

    w = ops.fori_loop(0, iterations, newton_step, w)
    w = w[:, 0] * trace ** (-1.0 / (1.0 + p))
    return ops.where(w < 1e30, w, 1e30)
