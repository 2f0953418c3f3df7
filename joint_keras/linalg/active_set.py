"""The quadratic programs beyond `K = MAX_ENUMERATED_TASKS`, by active-set
methods.

MGDA, UPGrad and DualProj run Lawson and Hanson's active-set method for
non-negative least squares (`_nnls`, on `min x^T H x / 2 - b^T x`,
`x >= 0`): finite and monotone. They take `3K + 5` steps, each one solve
on the current free set (a compact loop when compiled), usually about `K`
needed; a finished method idles. A coordinate is freed only for a gradient
above its rounding error, so that the free sets stay linearly independent
when `G` is singular. MGDA's simplex problem is brought to that form by a
penalty (`_min_norm_active_set`), the dual-cone projections by the change
of variables `v = u + x` (`_dual_cone_active_set`). CAGrad's active-set method, on the
same support systems, is in `joint_keras.linalg.cagrad`.

References:
    Lawson, Hanson. Solving Least Squares Problems. Prentice-Hall, 1974,
    chapter 23.
"""

import numpy as np
from keras import backend
from keras import ops

from joint_keras.linalg._common import _TINY
from joint_keras.linalg._common import _num_tasks
from joint_keras.linalg._common import _onto_simplex
from joint_keras.linalg._common import _refine_box
from joint_keras.linalg._common import _ridged_inverse

# Active-set methods: a gradient below this many machine epsilons of the
# magnitudes it is computed from is rounding noise.
_NOISE = 8.0


def _nnls(h, b, tolerance):
    """Lawson-Hanson's method for `min x^T H x / 2 - b^T x` on `x >= 0`.

    One problem per row of `b` `(B, K)`, `H` `(K, K)` symmetric positive
    semi-definite. A step solves the problem on the free set with the
    other coordinates at 0: if that solution is positive it is the new
    iterate and the coordinate with the largest gradient `b - H x` above
    `tolerance` `(B, 1)` is freed; else the iterate moves towards it until
    a coordinate reaches 0, which is fixed. The objective never increases,
    the free set stays linearly independent and the method ends in
    finitely many steps (usually about `K`). Gradients are taken less a
    bound on their rounding error: where `H` is singular, the gradients of
    the coordinates in the free set's span vanish but for rounding, and
    freeing one on that noise (a singular free set, solved through the
    ridge) would drift the iterate along a null vector.
    """
    k = _num_tasks(h)
    eye = ops.eye(k, dtype=h.dtype)
    norms = ops.sqrt(ops.diagonal(h) + 1e-12)
    abs_h = abs(h)
    rounding = _NOISE * float(np.finfo(backend.standardize_dtype(h.dtype)).eps)

    def step(_, state):
        free, x = state
        outer = free[:, :, None] * free[:, None, :]
        matrix = eye * (1.0 - free)[:, None, :] + outer * h
        inverse = _ridged_inverse(matrix, free, norms)
        rhs = free * b
        z = ops.sum(rhs[:, :, None] * inverse, axis=1)
        z = free * _refine_box(rhs, z, free, h, inverse)
        # The gradient less a bound on its rounding: a coordinate whose
        # gradient is rounding noise (one along the span of the free ones,
        # as singular H has) must not be freed.
        noise = rounding * (abs(b) + abs(z) @ abs_h)
        gradient = ops.where(free > 0, -np.inf, b - z @ h - noise)
        add = ops.max(gradient, axis=1, keepdims=True) > tolerance
        return _active_set_move(free, x, z, gradient, add, k)

    zeros = ops.zeros(ops.shape(b), h.dtype)
    return ops.fori_loop(0, 3 * k + 5, step, (zeros, zeros))[1]


def _active_set_move(free, x, z, score, add, k):
    """One move of a primal active-set method (Lawson-Hanson), batched:
    `(free, x)` after it, from the free set `free` (0/1), the iterate `x`,
    the free set's solution `z`, and `score` (`-inf` on free coordinates).

    Where `z` is positive on the free set it becomes the iterate, and the
    coordinate of highest `score` is freed where `add`. Elsewhere the
    iterate moves from `x` towards `z` until a coordinate reaches 0, which
    leaves the free set."""
    dtype = x.dtype
    blocked = (free > 0) & (z <= 0)
    interior = ops.logical_not(ops.any(blocked, axis=1, keepdims=True))
    newly = ops.one_hot(ops.argmax(score, axis=1), k, dtype=dtype)
    freed = free + ops.where(add, newly, 0.0)
    ratio = ops.where(blocked, x / (x - z + _TINY), np.inf)
    moved = x + ops.min(ratio, axis=1, keepdims=True) * (z - x)
    first = ops.one_hot(ops.argmin(ratio, axis=1), k, dtype=dtype)
    kept = free * (1.0 - first) * ops.cast(moved > 0, dtype)
    return ops.where(interior, freed, kept), ops.where(interior, z, moved * kept)


def _min_norm_active_set(g):
    """MGDA as `min_{u >= 0} |J^T u|^2 + rho^2 (1 - sum u)^2`: for any
    `rho > 0` its KKT conditions make `u / sum(u)` satisfy the simplex
    problem's exactly. `rho^2`, the smallest squared gradient norm (at
    least `|J^T w|^2`), keeps `G` from being rounded away next to it."""
    k = _num_tasks(g)
    rho = ops.min(ops.diagonal(g)) + 1e-12
    ones = ops.ones((1, k), g.dtype)
    u = _nnls(g + rho * ops.transpose(ones) * ones, rho * ones, 1e-6 * rho)
    return _onto_simplex(u[0])


def _dual_cone_active_set(corr, bounds):
    """`v = u + x`, `x >= 0` minimizing `(u + x)^T C (u + x)`."""
    tolerance = 1e-7 * ops.max(abs(bounds), axis=1, keepdims=True)
    return bounds + _nnls(corr, -(bounds @ corr), tolerance)
