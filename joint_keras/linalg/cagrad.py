"""CAGrad's problem: conflict-averse gradient descent.

With `g0 = J^T (1/K)` the mean gradient and `phi = c^2 |g0|^2`, CAGrad's
weights solve `min_{w in simplex} w^T G (1/K) + sqrt(phi) sqrt(w^T G w)`,
the dual of maximizing the worst task's improvement in the ball of radius
`sqrt(phi)` around `g0`. On a support the KKT conditions are a bordered
linear system with two right-hand sides and a scalar equation solved in
closed form (`_cagrad_combination`). Solved exactly up to
`K = MAX_ENUMERATED_TASKS` by enumerating supports
(`joint_keras.linalg.enumerated`); beyond, by a monotone primal
active-set method on the same support systems, like Lawson and Hanson's
(`_cagrad_active_set`, no finite-termination proof). The objective is not
differentiable at the kink `g_w = 0`, the optimum when no support has a
stationary point.

References:
    Liu, Liu, Jin, Stone, Liu. Conflict-Averse Gradient Descent for
    Multi-task Learning. NeurIPS 2021.
"""

import numpy as np
from keras import ops

from joint_keras.linalg._common import _TINY
from joint_keras.linalg._common import _constant
from joint_keras.linalg._common import _num_tasks
from joint_keras.linalg._common import _onto_simplex
from joint_keras.linalg._common import _refine
from joint_keras.linalg._common import _scale_to_unit_diagonal
from joint_keras.linalg._common import _take
from joint_keras.linalg.active_set import _active_set_move
from joint_keras.linalg.enumerated import MAX_ENUMERATED_TASKS
from joint_keras.linalg.enumerated import _bordered_candidates
from joint_keras.linalg.enumerated import _bordered_pack
from joint_keras.linalg.enumerated import _bordered_parts

# CAGrad: when no candidate scores below this, no point with `g_w != 0` is
# stationary and the optimum is the kink `g_w = 0`.
_KKT_TOLERANCE = 1e-3


def cagrad_coefficients(gram, c):
    """CAGrad's update as coefficients of the task gradients.

    With `g0 = J^T (1/K)` the mean gradient and `phi = c^2 |g0|^2`, solves
    `min_{w in simplex} w^T G (1/K) + sqrt(phi) sqrt(w^T G w)`, the dual of
    maximizing the worst task's improvement in the ball of radius
    `sqrt(phi)` around `g0`. The update is `J^T a`,
    `a = (1/K + sqrt(phi) / |g_w| w) / (1 + c^2)`, `|g_w| = sqrt(w^T G w)`
    (the authors rescale by `1 / (1 + c^2)`). Solved by enumerating
    supports (see `joint_keras.linalg.enumerated`): on a support the KKT
    conditions are a bordered linear system with two right-hand sides and a
    scalar equation solved in closed form. When the optimum is the kink
    `g_w = 0` (0 in the convex hull and no direction of the ball better
    than it, or `c = 0`) the update is the mean gradient and `w` does not
    matter.

    Args:
        gram: `(K, K)` Gram matrix of the task gradients, `K` static.
        c: Non-negative Python float, the ball's radius relative to `|g0|`.

    Returns:
        `(K,)` coefficients `a = (1/K + sqrt(phi) / |g_w| w) / (1 + c^2)`
        (0 in place of `sqrt(phi) / |g_w|` at the kink `g_w = 0`): the
        update is `J^T a`.

    References:
        Liu, Liu, Jin, Stone, Liu. Conflict-Averse Gradient Descent for
        Multi-task Learning. NeurIPS 2021.
    """
    w, lam = _cagrad(gram, c)
    return (1.0 / _num_tasks(gram) + lam * w) / (1.0 + float(c) ** 2)


def _cagrad(gram, c):
    """`(w, lam)`: CAGrad's weights and `sqrt(phi) / |g_w|` (0 at the kink)."""
    c = float(c)
    if not c >= 0:
        raise ValueError(f"`c` must be non-negative. Received: c={c!r}")
    k = _num_tasks(gram)
    g = _scale_to_unit_diagonal(gram)
    ones = ops.ones((k, 1), dtype=g.dtype)
    mean_gram = (g @ ones)[:, 0] / k  # G g0
    mean_sq = (mean_gram[None, :] @ ones)[0, 0] / k  # |g0|^2
    radius = c * ops.sqrt(ops.relu(mean_sq))
    if k > MAX_ENUMERATED_TASKS:
        w, score = _cagrad_active_set(g, mean_gram, mean_sq, radius)
    else:
        packed = _constant(_bordered_pack(k), g)
        matrix, inverse, extra, x = _bordered_candidates(g, packed, mean_gram)
        negated_masks = packed[:, k + 1, k + 1 : -1]
        _, score = _cagrad_scores(g, mean_gram, mean_sq, radius, negated_masks, x)
        best = ops.argmin(score + packed[:, -1, 0], keepdims=True)
        x, matrix, inverse, extra = _take((x, matrix, inverse, extra), best)
        rhs = ops.concatenate([ops.eye(1, k + 1, k, dtype=g.dtype)[None], extra], 1)
        x = _refine(rhs, x, matrix, inverse)
        w, score = _cagrad_combination(g, radius, x)[0][0], ops.min(score)
    w = _onto_simplex(w)
    norm = ops.sqrt(ops.relu(w[None, :] @ g @ w[:, None]))[0, 0]
    lam = ops.where(score <= _KKT_TOLERANCE, radius / (norm + _TINY), 0.0)
    return w, lam


def _cagrad_combination(g, radius, x):
    """CAGrad's stationary point on each support, from the rows of `x`.

    On a support, stationarity reads `G g0 + t G w = lam 1` with
    `t = sqrt(phi) / |g_w|`, so `w = w0 + s w1`, `s = 1 / t`, where `w0`
    solves the bordered system for `e_K` and `w1` for `(-G g0, 0)` (the two
    rows of `x`). As `w0^T G w1 = 0`, `|g_w| = sqrt(phi) s` gives
    `s^2 = w0^T G w0 / (phi - w1^T G w1)`. Returns `w`, `G w` and
    `phi - w1^T G w1` (no stationary point unless positive).
    """
    k = _num_tasks(g)
    x = x[:, :, :k]
    gx = x @ g
    quadratic = ops.sum(x * gx, axis=2)  # (B, 2): w0^T G w0, w1^T G w1
    room = radius**2 - quadratic[:, 1:]
    s = ops.sqrt(ops.relu(quadratic[:, :1]) / (ops.relu(room) + _TINY))
    return x[:, 0, :] + s * x[:, 1, :], gx[:, 0, :] + s * gx[:, 1, :], room


def _cagrad_scores(g, mean_gram, mean_sq, radius, negated_masks, x):
    """The candidates `w` of the rows `x`, and their KKT violations."""
    w, gw, room = _cagrad_combination(g, radius, x)
    score = _cagrad_violations(g, mean_gram, mean_sq, radius, negated_masks, w, gw)
    return w, ops.where(room[:, 0] > 1e-12, score, np.inf)


def _cagrad_violations(g, mean_gram, mean_sq, radius, negated_masks, w, gw):
    """KKT violations of CAGrad's weights `w` `(B, K)`, `gw = w G`.

    With the update direction `D = g0 + sqrt(phi) g_w / |g_w|`, `g_i . D`
    must equal `w^T J D` on the support and not be below it elsewhere;
    violations are measured along `D / |D|`, in gradient norms (infinite
    at `g_w = 0`, where the objective is not differentiable).
    """
    sq_norm = ops.relu(ops.sum(w * gw, axis=1, keepdims=True))
    t = radius / (ops.sqrt(sq_norm) + _TINY)
    grad = mean_gram + t * gw  # g_i . D
    level = ops.sum(w * grad, axis=1, keepdims=True)
    # |D|^2, with w^T G g0 = level - t |g_w|^2.
    direction = mean_sq + 2.0 * t * (level - t * sq_norm) + radius**2
    gap = (level - grad) / (ops.sqrt(ops.relu(direction)) + _TINY)
    violation = ops.relu(gap) + ops.relu(gap * negated_masks)
    dist = ops.sqrt(ops.relu(ops.diagonal(g) + (sq_norm - gw - gw)))
    score = ops.max(violation + ops.relu(-w) * dist, axis=1)
    return ops.where(sq_norm[:, 0] > 1e-12, score, np.inf)


def _cagrad_active_set(g, mean_gram, mean_sq, radius):
    """A primal active-set method for CAGrad, like Lawson-Hanson's: the
    support's stationary point (see `_cagrad_combination`) replaces the
    free-set solve; where the support has none, the objective decreases
    without bound along `w1` and the iterate moves that way to the
    boundary; at the kink `g_w = 0` the best vertex is freed. Monotone,
    but without a proof of finite termination; the KKT score decides, as
    for the enumeration, between the result and the kink."""
    k = _num_tasks(g)
    unit = ops.eye(1, k + 1, k, dtype=g.dtype)[None]
    cost = mean_gram + radius * ops.sqrt(ops.diagonal(g))  # f at the vertices

    def step(_, state):
        free, x = state
        packed = _bordered_parts(free, ops)
        matrix, inverse, extra, rows = _bordered_candidates(g, packed, mean_gram)
        rows = _refine(ops.concatenate([unit, extra], axis=1), rows, matrix, inverse)
        z, gz, room = _cagrad_combination(g, radius, rows)
        z = ops.where(room > 1e-12, z, rows[:, 0, :k] + 1e4 * rows[:, 1, :k])
        norm = ops.sqrt(ops.relu(ops.sum(z * gz, axis=1, keepdims=True)))
        grad = mean_gram + radius * gz / (norm + _TINY)
        gap = ops.sum(z * grad, axis=1, keepdims=True) - grad
        # At the kink g_w = 0 there is no gradient: free the best vertex.
        kink = norm < 1e-6
        gap = ops.where(free > 0, -np.inf, ops.where(kink, 1.0 - cost, gap))
        threshold = ops.cast(ops.where(kink, -1e30, 1e-7), g.dtype)
        add = ops.max(gap, axis=1, keepdims=True) > threshold
        return _active_set_move(free, x, z, gap, add, k)

    # Start at the best vertex where the objective is differentiable.
    start_cost = ops.where(ops.diagonal(g) > 1e-12, cost, np.inf)
    start = ops.one_hot(ops.argmin(start_cost, keepdims=True), k, dtype=g.dtype)
    _, w = ops.fori_loop(0, 3 * k + 5, step, (start, start))
    support = ops.cast(w > 0, g.dtype)
    score = _cagrad_violations(g, mean_gram, mean_sq, radius, -support, w, w @ g)
    return w[0], score[0]
