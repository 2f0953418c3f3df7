"""Exact solvers for the small problems of gradient-combining strategies.

MGDA, UPGrad, DualProj, CAGrad, Nash-MTL and FairGrad combine the `K` task
gradients (the rows of a Jacobian `J`) with weights that solve a small
problem on their `K x K` Gram matrix `G = J J^T`; IMTL-G and ConFIG with
weights from the pseudo-inverse of its correlation matrix. The functions
here solve these problems from `G` alone, with `keras.ops` and Python
operators on tensors, every shape fixed at trace time (`K` must be
static): they run eagerly, inside `tf.function` and inside `jax.jit`, with
no host round-trip and no data-dependent Python control flow. Inputs are
float32 (float64 works too, refined further).

Modules, one family of problems or methods each (the math and references
in each module's docstring):

- `quadratic`: the quadratic programs, the minimum-norm point of the
  gradients' convex hull (MGDA) and the projections onto their dual cone
  (UPGrad, DualProj).
- `cagrad`: CAGrad's problem (a linear term plus a norm on the simplex).
- `enumerated`: how the quadratic programs and CAGrad's are solved
  exactly up to `K = MAX_ENUMERATED_TASKS`, by enumerating supports.
- `active_set`: how the quadratic programs are solved beyond, by Lawson
  and Hanson's active-set method (CAGrad's own active-set method is in
  `cagrad`).
- `newton`: Nash-MTL's and FairGrad's stationarity equations, by Newton's
  method; `solved` checks a solution.
- `equal_projection`: the direction at equal angles to the gradients
  (IMTL-G, ConFIG).
- `_common`: what they share: the constants, scaling, ridged inverses,
  iterative refinement, the projection onto the simplex, and
  `normalize_gram` (TorchJD's regularization of `G`).

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

from joint_keras.linalg._common import normalize_gram
from joint_keras.linalg.cagrad import cagrad_coefficients
from joint_keras.linalg.enumerated import MAX_ENUMERATED_TASKS
from joint_keras.linalg.equal_projection import equal_projection_weights
from joint_keras.linalg.newton import fairgrad_weights
from joint_keras.linalg.newton import nash_mtl_weights
from joint_keras.linalg.newton import solved
from joint_keras.linalg.quadratic import min_norm_weights
from joint_keras.linalg.quadratic import project_to_dual_cone

__all__ = [
    "MAX_ENUMERATED_TASKS",
    "cagrad_coefficients",
    "equal_projection_weights",
    "fairgrad_weights",
    "min_norm_weights",
    "nash_mtl_weights",
    "normalize_gram",
    "project_to_dual_cone",
    "solved",
]
