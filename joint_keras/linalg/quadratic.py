"""The quadratic programs: the minimum-norm point (MGDA) and the
projections onto the dual cone (UPGrad, DualProj).

MGDA's weights solve `min_{w in simplex} w^T G w`: `J^T w` is the shortest
vector of the convex hull of the task gradients, 0 exactly at a
Pareto-stationary point. UPGrad's and DualProj's solve
`min_{v >= u} v^T G v`, the dual of projecting `J^T u` onto the dual cone
`{x : J x >= 0}` of the gradients: UPGrad projects each gradient
(`u = e_i`) and averages, DualProj projects their mean. Both are solved
exactly up to `K = MAX_ENUMERATED_TASKS` (`joint_keras.linalg.enumerated`),
by Lawson and Hanson's method beyond (`joint_keras.linalg.active_set`). The
projections are solved on the correlation matrix `G_ij / (|g_i| |g_j|)`.

References:
    Sener, Koltun. Multi-Task Learning as Multi-Objective Optimization.
    NeurIPS 2018.

    Quinton, Rey. Jacobian Descent for Multi-Objective Optimization.
    arXiv:2406.16232, 2024.
"""

from keras import ops

from joint_keras.linalg._common import _TINY
from joint_keras.linalg._common import _constant
from joint_keras.linalg._common import _num_tasks
from joint_keras.linalg._common import _onto_simplex
from joint_keras.linalg._common import _refine
from joint_keras.linalg._common import _refine_box
from joint_keras.linalg._common import _scale_to_unit_diagonal
from joint_keras.linalg._common import _take
from joint_keras.linalg.active_set import _dual_cone_active_set
from joint_keras.linalg.active_set import _min_norm_active_set
from joint_keras.linalg.enumerated import MAX_ENUMERATED_TASKS
from joint_keras.linalg.enumerated import _bordered_candidates
from joint_keras.linalg.enumerated import _bordered_pack
from joint_keras.linalg.enumerated import _box_candidates
from joint_keras.linalg.enumerated import _box_pack
from joint_keras.linalg.enumerated import _box_scores
from joint_keras.linalg.enumerated import _min_norm_scores


def min_norm_weights(gram):
    """Minimum-norm point of the convex hull of the gradients (MGDA).

    Solves `min_{w in simplex} w^T G w`: `J^T w` is the shortest vector of
    the convex hull of the task gradients, a direction along which no
    task's loss increases, and 0 exactly when the gradients are
    Pareto-stationary. Solved by enumerating supports (see
    `joint_keras.linalg.enumerated`): exact for `K <= MAX_ENUMERATED_TASKS`,
    an active-set iteration beyond. The answer does not depend on the scale
    of `G`. When the minimizer is not unique (affinely dependent gradients)
    `J^T w` still is; a minimizer with the fewest non-zero weights is
    returned.

    Args:
        gram: `(K, K)` Gram matrix of the task gradients, `K` static.

    Returns:
        `(K,)` non-negative weights summing to 1.

    References:
        Sener, Koltun. Multi-Task Learning as Multi-Objective Optimization.
        NeurIPS 2018.
    """
    k = _num_tasks(gram)
    if k == 1:
        return ops.ones((1,), gram.dtype)
    g = _scale_to_unit_diagonal(gram)
    if k > MAX_ENUMERATED_TASKS:
        return _min_norm_active_set(g)
    packed = _constant(_bordered_pack(k), g)
    matrix, inverse, _, x = _bordered_candidates(g, packed)
    score = _min_norm_scores(g, x[:, 0, :k], packed[:, k + 1 : k + 2, k + 1 : -1])
    best = ops.argmin(score + packed[:, -1, 0], keepdims=True)
    x, matrix, inverse = _take((x, matrix, inverse), best)
    x = _refine(ops.eye(1, k + 1, k, dtype=g.dtype)[None], x, matrix, inverse)
    return _onto_simplex(x[0, 0, :k])


def project_to_dual_cone(gram, lower):
    """Dual form of the projections onto the gradients' dual cone (UPGrad).

    For each row `u` of `lower`, solves `min_{v >= u} v^T G v`. `J^T v` is
    the projection of `J^T u` onto the dual cone `{x : J x >= 0}`, the
    closest direction that conflicts with no task. UPGrad uses `lower = I`
    and averages the rows; DualProj uses the one row `(1/K, ..., 1/K)`.
    Solved on the correlation matrix by enumerating the free sets of the
    bounds (see `joint_keras.linalg.enumerated`): exact for
    `K <= MAX_ENUMERATED_TASKS`, an active-set iteration beyond. Where `G`
    is singular the minimizer need not be unique: the returned `v` is one
    whose `J^T v` is the (unique) projection, with the fewest free
    entries. Scaling `J` leaves `v` unchanged (`J^T v` is linear in `J`).

    Args:
        gram: `(K, K)` Gram matrix of the task gradients, `K` static.
        lower: `(M, K)` lower bounds, one problem per row, `M` static.

    Returns:
        `(M, K)` tensor, row `i` the minimizer for `lower[i]`.

    References:
        Quinton, Rey. Jacobian Descent for Multi-Objective Optimization.
        arXiv:2406.16232, 2024.
    """
    k = _num_tasks(gram)
    g = _scale_to_unit_diagonal(gram)
    lower = ops.cast(lower, g.dtype)
    norms = ops.sqrt(ops.diagonal(g) + _TINY)
    corr = g / (norms[:, None] * norms[None, :])
    # The bounds in correlation coordinates, v_i |g_i|: one problem a row.
    bounds = lower * norms[None, :]
    if k > MAX_ENUMERATED_TASKS:
        v = _dual_cone_active_set(corr, bounds)
    else:
        packed = _constant(_box_pack(k), g)
        inverse, rhs, x = _box_candidates(corr, bounds[None], packed)
        score = _box_scores(corr, bounds[None], packed, x) + packed[:, -1, :1]
        # Problem m takes the candidate of support best[m]: x[best[m], m].
        num_rows = ops.shape(lower)[0]
        best = ops.argmin(score, axis=0)
        rows = ops.take(
            ops.reshape(ops.concatenate([rhs, x], axis=2), (-1, 2 * k)),
            best * num_rows + ops.arange(num_rows, dtype=best.dtype),
            axis=0,
        )
        inverse, free = _take((inverse, packed[:, k : k + 1, :k]), best)
        free = free[:, 0, :]
        x = _refine_box(rows[:, :k], rows[:, k:], free, corr, inverse)
        v = (1.0 - free) * bounds + free * x
    v = v / norms[None, :]
    return ops.where(v > lower, v, lower)
