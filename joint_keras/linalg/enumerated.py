"""Exact solutions of the quadratic programs and CAGrad's, by enumerating
supports.

The quadratic programs (MGDA, UPGrad, DualProj) and CAGrad are solved
exactly by enumerating supports. An optimum always has a minimal support
on which the optimality (KKT) conditions are an invertible linear system.
All `2^K` systems are inverted at once (one batched inverse, 256 systems
of size 9 at `K = 8`), every candidate is scored by how much it violates
the KKT conditions, measured as a distance in gradient space, and the
best one is refined. This is the method up to `K = MAX_ENUMERATED_TASKS`
(10; under 1 ms per call up to `K = 8`, 1 to 5 ms at 9 and 10); beyond,
see `joint_keras.linalg.active_set`.

The supports' systems, for masks `S` (`(B, K)`, 0/1), packed as constants
built with numpy once per `K` (or with `keras.ops` for the active-set
iterate of `joint_keras.linalg.cagrad`):

- Simplex problems (MGDA, CAGrad): the bordered KKT systems
  `[[G_SS, 1], [1^T, 0]]` (`_bordered_parts`), whose solution for `e_K`
  gives the weights of the minimum-norm point of the support's affine
  hull and minus its squared norm.
- Box problems `min v^T C v` on `v >= u` (UPGrad, DualProj, on the
  correlation matrix `C`): `diag(1 - f) + (f f^T) * C` on the free set
  `f` (`_box_parts`), the fixed coordinates at their bound.

Each system gets a ridge, removed by one step on every candidate
(`_ridged_candidates`); scores carry a penalty per support index
(`_SIZE_PENALTY`), so that among equally good candidates the smallest
support wins.
"""

import functools
import itertools

import numpy as np
from keras import ops

from joint_keras.linalg._common import _RIDGE
from joint_keras.linalg._common import _TINY
from joint_keras.linalg._common import _num_tasks
from joint_keras.linalg._common import _ridged_inverse

MAX_ENUMERATED_TASKS = 10

# Among candidates equally good to rounding, the smallest support wins (a
# larger one may be singular, and refining its solution drifts along the
# null vectors): violations below this, per index, are traded for it.
# Scores are in units of the largest gradient norm.
_SIZE_PENALTY = 1e-7


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


def _rows_times(x, matrix):
    """`x @ matrix` for `x` `(B, M, K)`: one 2-D product (a broadcast
    batched product is slow on TensorFlow's CPU kernels; `ops.tensordot`
    rounds float64 to float32 on PyTorch)."""
    k = _num_tasks(matrix)
    return ops.reshape(ops.reshape(x, (-1, k)) @ matrix, ops.shape(x))


def _ridged_candidates(rhs_inverse, ridge, inverse):
    """The solutions `b (A + R)^-1`, as rows, after one step of
    `x <- x0 + (x R) (A + R)^-1`, which converges to `b A^-1`. (Its
    rounding errors add up along the null vectors of a singular `A`, so
    the chosen candidate is refined with true residuals instead.)"""
    return rhs_inverse + (ridge * rhs_inverse) @ inverse
