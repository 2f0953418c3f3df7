"""Exact solvers for the small problems of gradient-combining strategies.

MGDA, UPGrad, DualProj, CAGrad, Nash-MTL and FairGrad combine the `K` task
gradients (the rows of a Jacobian `J`) with weights that solve a small
problem on their `K x K` Gram matrix `G = J J^T`. The functions here solve
these problems from `G` alone, with `keras.ops` and Python operators on
tensors, every shape fixed at trace time (`K` must be static): they run
eagerly, inside `tf.function` and inside `jax.jit`, with no host round-trip
and no data-dependent Python control flow. Inputs are float32 (float64
works too, refined further).

Methods:

- The quadratic programs (MGDA, UPGrad, DualProj) and CAGrad are solved
  exactly by enumerating supports. An optimum always has a minimal support
  on which the optimality (KKT) conditions are an invertible linear system.
  All `2^K` systems are inverted at once (one batched inverse, 256 systems
  of size 9 at `K = 8`), every candidate is scored by how much it violates
  the KKT conditions, measured as a distance in gradient space, and the
  best one is refined. This is the method up to `K = MAX_ENUMERATED_TASKS`
  (10; under 1 ms per call up to `K = 8`, 1 to 5 ms at 9 and 10). Beyond,
  MGDA, UPGrad and DualProj run Lawson and Hanson's active-set method for
  non-negative least squares (finite, monotone; `3K + 5` steps, one solve
  each, usually about `K` needed) and CAGrad a monotone primal active-set
  method on the same support systems (no finite-termination proof).
- Nash-MTL and FairGrad are smooth, strictly convex problems with a unique
  positive solution: a fixed number of Newton steps on `log w` (quadratic
  convergence, positivity without a line search); any `K`.

Float32 robustness: each solver rescales `G` (the answers are scale-free or
scaled back). UPGrad and DualProj work on the correlation matrix
`G_ij / (|g_i| |g_j|)`, so that gradient norms spanning orders of magnitude
cost no precision. Every candidate system gets a ridge of 1e-6 relative to
its diagonal, which keeps exactly singular ones (duplicate, opposite, zero
or linearly dependent gradients) invertible; the systems are inverted
equilibrated to a unit diagonal, where that ridge stays above the rounding
of the elimination whatever the gradient norms. One ridge-removal step on
all candidates and three steps of iterative refinement on the chosen one
(ten in float64) undo it. Among equally good candidates the smallest
support wins, whose system is invertible. The active-set methods free a
coordinate only for a gradient above its rounding error, so that their free
sets stay linearly independent when `G` is singular. The error of the
combined update is then what float32 allows: within a small factor of the
change that rounding `G` to float32 alone causes.
"""

import functools
import itertools

import numpy as np
from keras import backend
from keras import ops

MAX_ENUMERATED_TASKS = 10

_RIDGE = 1e-6
# Among candidates equally good to rounding, the smallest support wins (a
# larger one may be singular, and refining its solution drifts along the
# null vectors): violations below this, per index, are traded for it.
# Scores are in units of the largest gradient norm.
_SIZE_PENALTY = 1e-7
_REFINEMENTS = 3
_REFINEMENTS_FLOAT64 = 10
# Active-set methods: a gradient below this many machine epsilons of the
# magnitudes it is computed from is rounding noise.
_NOISE = 8.0
_TINY = 1e-30
# CAGrad: when no candidate scores below this, no point with `g_w != 0` is
# stationary and the optimum is the kink `g_w = 0`.
_KKT_TOLERANCE = 1e-3
_NEWTON_STEPS = 10
# Bound on the Nash-MTL and FairGrad weights of a unit-trace Gram matrix.
_MAX_FAIR_WEIGHT = 1e15


def normalize_gram(gram, norm_eps=0.0, reg_eps=0.0):
    """Scales a Gram matrix to unit trace and optionally regularizes it.

    `G = J J^T` is divided by its trace, the squared Frobenius norm of `J`,
    so that the task gradients' squared norms sum to 1; a trace not above
    `norm_eps` gives the zero matrix instead. Then `reg_eps * I` is added:
    a ridge that keeps the matrix positive definite despite rounding or
    linearly dependent gradients, at the price of solving a slightly
    different problem. These are TorchJD's `norm_eps` and `reg_eps` (1e-4
    each in its UPGrad). The solvers of this module need neither: they
    rescale internally and regularize only their candidate systems.

    Args:
        gram: `(K, K)` symmetric positive semi-definite tensor.
        norm_eps: Non-negative float, the largest trace treated as zero.
        reg_eps: Non-negative float, the ridge added after normalization.

    Returns:
        The `(K, K)` normalized (and regularized) Gram matrix.
    """
    trace = ops.trace(gram)
    nonzero = trace > norm_eps
    scaled = ops.where(nonzero, gram / ops.where(nonzero, trace, 1.0), 0.0)
    if reg_eps:
        scaled = scaled + reg_eps * ops.eye(_num_tasks(gram), dtype=gram.dtype)
    return scaled


def min_norm_weights(gram):
    """Minimum-norm point of the convex hull of the gradients (MGDA).

    Solves `min_{w in simplex} w^T G w`: `J^T w` is the shortest vector of
    the convex hull of the task gradients, a direction along which no
    task's loss increases, and 0 exactly when the gradients are
    Pareto-stationary. Solved by enumerating supports (see the module
    docstring): exact for `K <= MAX_ENUMERATED_TASKS`, an active-set
    iteration beyond. The answer does not depend on the scale of `G`. When
    the minimizer is not unique (affinely dependent gradients) `J^T w`
    still is; a minimizer with the fewest non-zero weights is returned.

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
    bounds (see the module docstring): exact for
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


def cagrad_coefficients(gram, c):
    """CAGrad's update as coefficients of the task gradients.

    With `g0 = J^T (1/K)` the mean gradient and `phi = c^2 |g0|^2`, solves
    `min_{w in simplex} w^T G (1/K) + sqrt(phi) sqrt(w^T G w)`, the dual of
    maximizing the worst task's improvement in the ball of radius
    `sqrt(phi)` around `g0`. The update is `J^T a`,
    `a = (1/K + sqrt(phi) / |g_w| w) / (1 + c^2)`, `|g_w| = sqrt(w^T G w)`
    (the authors rescale by `1 / (1 + c^2)`). Solved by enumerating
    supports (see the module docstring): on a support the KKT conditions
    are a bordered linear system with two right-hand sides and a scalar
    equation solved in closed form. When the optimum is the kink `g_w = 0`
    (0 in the convex hull and no direction of the ball better than it, or
    `c = 0`) the update is the mean gradient and `w` does not matter.

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


# ----------------------------------------------------------------------------
# Helpers.


def _num_tasks(gram):
    k = gram.shape[-1]
    if k is None:
        raise ValueError("The number of tasks (the Gram matrix's size) must be static.")
    return int(k)


def _scale_to_unit_diagonal(gram):
    """`gram` divided by its largest diagonal entry (0 stays 0)."""
    return gram / (ops.max(ops.diagonal(gram)) + _TINY)


def _constant(array, like):
    return ops.convert_to_tensor(array.astype(backend.standardize_dtype(like.dtype)))


def _onto_simplex(w):
    """Clears the rounding-size negative entries of `w` and renormalizes."""
    w = ops.relu(w)
    return w / (ops.sum(w) + _TINY)


def _take(tensors, index):
    """`[t[index] for t in tensors]`, one gather: the tensors `(B, r_i, n)`
    are stacked along axis 1 (ragged `n` is not supported)."""
    taken = ops.take(ops.concatenate(tensors, axis=1), index, axis=0)
    parts, start = [], 0
    for t in tensors:
        parts.append(taken[:, start : start + t.shape[1]])
        start += t.shape[1]
    return parts


def _rows_times(x, matrix):
    """`x @ matrix` for `x` `(B, M, K)`: one 2-D product (a broadcast
    batched product is slow on TensorFlow's CPU kernels; `ops.tensordot`
    rounds float64 to float32 on PyTorch)."""
    k = _num_tasks(matrix)
    return ops.reshape(ops.reshape(x, (-1, k)) @ matrix, ops.shape(x))


def _refinements(x):
    """Refinement steps: more in float64, whose rounding lets them help."""
    wide = backend.standardize_dtype(x.dtype) == "float64"
    return _REFINEMENTS_FLOAT64 if wide else _REFINEMENTS


def _refine(rhs, x, matrix, inverse):
    """Iterative refinement of the row `x` solving `x matrix = rhs`, one
    system (batch 1), with the ridged system's inverse as preconditioner.

    Each step shrinks the error by about `ridge / (ridge + lambda)` along
    each eigenvalue `lambda` of the system.
    """
    x, matrix, inverse, rhs = x[0], matrix[0], inverse[0], rhs[0]
    for _ in range(_refinements(x)):
        x = x + (rhs - x @ matrix) @ inverse
    return x[None]


def _refine_box(rhs, x, free, corr, inverse):
    """Iterative refinement of the rows `x` `(M, K)` solving
    `x (diag(1 - f) + (f f^T) * C) = rhs`, each row with its own free set
    `f` (`free`, `(M, K)`) and preconditioner `inverse` `(M, K, K)`."""
    for _ in range(_refinements(x)):
        residual = rhs - (1.0 - free) * x - free * ((free * x) @ corr)
        x = x + ops.sum(residual[:, :, None] * inverse, axis=1)
    return x


def _ridged_inverse(matrix, masks, norms, outside=None):
    """`(A + R)^-1` for the systems `A` `(B, N, N)`, `R` the ridge
    `_RIDGE * norms^2` on the coordinates where `masks` `(B, N)` is 1.

    Inverted equilibrated, as `S (S A S + _RIDGE I_masks)^-1 S` with
    `S = 1 / norms` on the masks and 1 (or `outside` `(B, N)`) elsewhere:
    on a unit diagonal the ridge (1e-6) stays above the rounding of the
    elimination, however small some norms are. Added directly, the ridge
    of a small gradient's row sits below the rounding of the large
    entries, and the systems of exactly singular supports (collinear
    gradients of different norms) come out singular in float32: TensorFlow
    and PyTorch then raise, JAX returns NaN.
    """
    scale = masks / norms + (1.0 - masks) * (1.0 if outside is None else outside)
    scaled = scale[:, :, None] * matrix * scale[:, None, :]
    eye = ops.eye(ops.shape(matrix)[-1], dtype=matrix.dtype)
    inverse = ops.inv(scaled + eye * (_RIDGE * masks)[:, None, :])
    return scale[:, :, None] * inverse * scale[:, None, :]


def _ridged_candidates(rhs_inverse, ridge, inverse):
    """The solutions `b (A + R)^-1`, as rows, after one step of
    `x <- x0 + (x R) (A + R)^-1`, which converges to `b A^-1`. (Its
    rounding errors add up along the null vectors of a singular `A`, so
    the chosen candidate is refined with true residuals instead.)"""
    return rhs_inverse + (ridge * rhs_inverse) @ inverse


# ----------------------------------------------------------------------------
# Enumerated supports. Constants are built with numpy once per `K`.


@functools.cache
def _support_masks(k, with_empty):
    """All `2^K` 0/1 masks (without the empty one unless asked), `(P, K)`."""
    masks = np.array(list(itertools.product((0.0, 1.0), repeat=k)), "float32")
    return masks if with_empty else masks[1:]


@functools.cache
def _bordered_pack(k):
    return _bordered_parts(_support_masks(k, with_empty=False), np)


@functools.cache
def _box_pack(k):
    return _box_parts(_support_masks(k, with_empty=True))


def _bordered_parts(masks, xp):
    """The KKT systems `[[G_SS, 1], [1^T, 0]]` of the supports `masks`.

    For masks `(B, K)` returns `(B, K+3, 2(K+1))`: rows `:K+1` hold `base`
    and `outer`, the system being `base + outer * pad(G)` (the identity on
    the rows outside the support); row `K+1` holds the masks and minus the
    masks, each padded with a 0; row `K+2` starts with the size penalty.
    `xp` is `np` (constants) or `keras.ops`.
    """
    b, k = masks.shape
    eye = xp.eye(k, dtype=masks.dtype)
    column = xp.expand_dims(masks, 2)
    row = xp.expand_dims(masks, 1)
    corner = xp.zeros((b, 1, 1), dtype=masks.dtype)
    top = xp.concatenate([(1.0 - column) * eye, column], axis=2)
    base = xp.concatenate([top, xp.concatenate([row, corner], axis=2)], axis=1)
    outer = xp.pad(column * row, [[0, 0], [0, 1], [0, 1]])
    padded_row = xp.concatenate([row, corner], axis=2)
    size = _SIZE_PENALTY * xp.sum(padded_row, axis=2, keepdims=True)
    penalty = xp.concatenate([size, xp.zeros((b, 1, 2 * k + 1), masks.dtype)], axis=2)
    return xp.concatenate(
        [
            xp.concatenate([base, outer], axis=2),
            xp.concatenate([padded_row, -padded_row], axis=2),
            penalty,
        ],
        axis=1,
    )


def _box_parts(masks):
    """The systems of `min v^T C v` on `v >= u` with free sets `masks`.

    For masks `(B, K)` returns `(B, K+2, 2K)`: rows `:K` hold `base` and
    `outer`, the system being `base + outer * C` (the identity on the
    fixed coordinates); row `K` holds the masks and minus the masks; row
    `K+1` starts with the size penalty.
    """
    b, k = masks.shape
    column, row = masks[:, :, None], masks[:, None, :]
    size = _SIZE_PENALTY * row.sum(axis=2, keepdims=True)
    return np.concatenate(
        [
            np.concatenate([(1.0 - column) * np.eye(k), column * row], axis=2),
            np.concatenate([row, -row], axis=2),
            np.concatenate([size, np.zeros((b, 1, 2 * k - 1))], axis=2),
        ],
        axis=1,
    ).astype("float32")


def _bordered_candidates(g, packed, mean_gram=None):
    """Solves the ridged bordered KKT systems of the supports in `packed`.

    The right-hand sides are rows: `e_K` (giving the weights of the
    minimum-norm point of the support's affine hull, and minus its squared
    norm), then, given `mean_gram = G g0`, `(-G g0, 0)` restricted to the
    support. Returns `(matrix, inverse, extra, x)`: the systems, the ridged
    systems' inverses, the second right-hand sides (or None) and the
    solutions after one ridge-removal step, `(B, 1 or 2, K+1)`.
    """
    k = _num_tasks(g)
    n = k + 1
    eye = ops.eye(n, dtype=g.dtype)
    padded = eye[:, :k] @ g @ eye[:k, :]
    masks = packed[:, n, :n]
    sq_norms = ops.diagonal(padded) + 1e-12
    ridge = masks[:, None, :] * (_RIDGE * sq_norms)
    matrix = packed[:, :n, :n] + packed[:, :n, n:] * padded
    # The border row scaled by the support's smallest norm: entries <= 1.
    norms = ops.sqrt(sq_norms)
    border = ops.min(ops.where(masks > 0, norms, 1.0), axis=1, keepdims=True)
    outside = 1.0 + eye[k] * (border - 1.0)
    inverse = _ridged_inverse(matrix, masks, norms, outside)
    x = inverse[:, k:, :]  # e_K times the inverse
    extra = None
    if mean_gram is not None:
        extra = packed[:, n : n + 1, n:] * (eye[:, :k] @ mean_gram[:, None])[:, 0]
        x = ops.concatenate([x, extra @ inverse], axis=1)
    return matrix, inverse, extra, _ridged_candidates(x, ridge, inverse)


def _min_norm_scores(g, w, negated_masks):
    """KKT violations of the simplex weights `w` `(B, K)`, as distances.

    With `d = J^T w`, a violated `g_i . d >= |d|^2` lets `d` move by about
    `violation / |g_i - d|` (and at most its square root) towards a
    shorter point; a negative `w_i` puts `d` about `-w_i |g_i - d|` off the
    hull. On the support, `g_i . d = |d|^2` must hold both ways.
    """
    gw = w @ g
    sq_norm = ops.sum(w * gw, axis=1, keepdims=True)
    gap = sq_norm - gw
    violation = ops.relu(gap) + ops.relu(gap * negated_masks[:, 0, :])
    dist = ops.sqrt(ops.relu(ops.diagonal(g) + (sq_norm - gw - gw)))
    dual = violation / (dist + ops.sqrt(violation) + _TINY)
    return ops.max(dual + ops.relu(-w) * dist, axis=1)


def _box_candidates(corr, bounds, packed):
    """Solutions of `min v^T C v` on `v >= u` for the free sets in `packed`.

    `bounds` `(1 or B, M, K)` holds one `u` per row; solutions are rows
    too (the systems are symmetric). Returns `(inverse, rhs, x)`:
    the ridged systems' inverses, the right-hand sides and the solutions
    after one ridge-removal step, `(B, M, K)`.
    """
    k = _num_tasks(corr)
    free = packed[:, k : k + 1, :k]
    fixed = (1.0 - free) * bounds
    rhs = fixed - free * _rows_times(fixed, corr)
    matrix = packed[:, :k, :k] + packed[:, :k, k:] * corr
    ridge = _RIDGE * free
    inverse = ops.inv(matrix + ops.eye(k, dtype=corr.dtype) * ridge)
    return inverse, rhs, _ridged_candidates(rhs @ inverse, ridge, inverse)


def _box_scores(corr, bounds, packed, x):
    """KKT violations `(B, M)` of the candidates `x` `(B, M, K)`.

    In units of the gradient norms: `C` has a unit diagonal, so `(C v)_i`
    is the update's component along `g_i / |g_i|`. It must vanish on the
    free set and be non-negative elsewhere; `v >= u` everywhere.
    """
    k = _num_tasks(corr)
    free = packed[:, k : k + 1, :k]
    v = (1.0 - free) * bounds + free * x
    cv = _rows_times(v, corr)
    dual = ops.relu(-cv) + ops.relu(cv * free)
    return ops.max(dual + ops.relu(bounds - v), axis=2)


# ----------------------------------------------------------------------------
# CAGrad.


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


# ----------------------------------------------------------------------------
# Active-set methods, for `K > MAX_ENUMERATED_TASKS`: `3K + 5` steps, each
# one solve on the current free set (a compact loop when compiled); a
# finished method idles.


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
