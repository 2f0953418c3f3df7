"""What the solvers share: constants, scaling, ridged inverses, iterative
refinement, the projection onto the simplex, and `normalize_gram`.

The candidate systems get a ridge of `_RIDGE` (1e-6) relative to their
diagonal and are inverted equilibrated to a unit diagonal
(`_ridged_inverse`); iterative refinement with the ridged inverse as
preconditioner (`_refine`, `_refine_box`: 3 steps, 10 in float64) undoes
the ridge.
"""

from keras import backend
from keras import ops

_RIDGE = 1e-6
_REFINEMENTS = 3
_REFINEMENTS_FLOAT64 = 10
_TINY = 1e-30


def normalize_gram(gram, norm_eps=0.0, reg_eps=0.0):
    """Scales a Gram matrix to unit trace and optionally regularizes it.

    `G = J J^T` is divided by its trace, the squared Frobenius norm of `J`,
    so that the task gradients' squared norms sum to 1; a trace not above
    `norm_eps` gives the zero matrix instead. Then `reg_eps * I` is added:
    a ridge that keeps the matrix positive definite despite rounding or
    linearly dependent gradients, at the price of solving a slightly
    different problem. These are TorchJD's `norm_eps` and `reg_eps` (1e-4
    each in its UPGrad). The solvers of this package need neither: they
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
