"""`GradVac`: gradient vaccine (Wang et al.)."""

import keras
from keras import ops

from joint_keras._compile.checks import MAX_SEED
from joint_keras._compile.checks import check_number
from joint_keras.weighting.base import Coefficients
from joint_keras.weighting.base import Weighting

# Targets are capped here in the correction: at a target of 1 the
# correction is infinite, and float32 cannot tell cosines closer to 1.
MAX_TARGET = 1.0 - 1e-4


@keras.saving.register_keras_serializable(package="joint_keras")
class GradVac(Weighting):
    """Steers each pair of task gradients towards their usual agreement.

    Like PCGrad, but towards a target cosine instead of orthogonality.
    For each task `i` (on the shared variables), in a random order of the
    other tasks `j` (drawn per task at every step, as LibMTL and TorchJD
    do): with `phi = cos(g_i', g_j)`, `g_i'` the gradient as corrected so
    far, and `T_ij` the target, if `phi < T_ij`,
    `g_i' <- g_i' + |g_i'| (T_ij sqrt(1 - phi^2) - phi sqrt(1 - T_ij^2))
    / (|g_j| sqrt(1 - T_ij^2)) g_j`, which makes the cosine `T_ij`. Then
    `T_ij <- (1 - beta) T_ij + beta phi` (the targets start at 0, where
    the correction is PCGrad's projection). The update is the sum of the
    corrected gradients. Worked out on the Gram matrix (each corrected
    gradient is a combination of the originals), over all shared
    variables at once: the paper's coarsest granularity (LibMTL's
    `group_type=0`); per-layer targets are not available from the Gram
    matrix. Targets are used capped at `1 - 1e-4`. The targets, a
    `(K, K)` variable, change only in training steps (and not when all
    gradients are zero, a skipped step); tasks absent from a step keep
    theirs. The other variables get their task's gradient.

    {{gradient_level_layouts}}

    References:
        Wang, Tsvetkov, Firat, Cao. Gradient Vaccine: Investigating and
        Improving Multi-task Optimization in Massively Multilingual
        Models. ICLR 2021.

    Args:
        beta: Float in [0, 1], the targets' EMA rate. Defaults to 0.01,
            the paper's (LibMTL's and TorchJD's default is 0.5).
        seed: Optional int seed of the random orders, in [0, 2**31 - 1].
        **kwargs: `representation` (see `jk.weighting.Weighting`), `name`.
    """

    gradient_level = True

    def __init__(self, beta=0.01, seed=None, **kwargs):
        super().__init__(**kwargs)
        owner = "jk.weighting.GradVac"
        self.beta = check_number(beta, "beta", owner, minimum=0, maximum=1)
        self.seed = check_number(
            seed, "seed", owner, kind=int, minimum=0, maximum=MAX_SEED, optional=True
        )
        self.seed_generator = keras.random.SeedGenerator(self.seed)

    def build_state(self, num_tasks):
        self.targets = self.add_weight(
            shape=(num_tasks, num_tasks),
            initializer="zeros",
            trainable=False,
            name="cosine_targets",
        )

    def coefficients(self, gram, losses, indices, training):
        n = len(indices)
        k = self.targets.shape[0]
        everyone = list(indices) == list(range(k))
        all_targets = ops.convert_to_tensor(self.targets)
        if everyone:
            targets = all_targets
        else:
            select = ops.one_hot(ops.array(indices), k, dtype=gram.dtype)  # (n, K)
            targets = select @ all_targets @ ops.transpose(select)
        orders = ops.argsort(keras.random.uniform((n, n), seed=self.seed_generator))
        # picks[i, t]: one-hot of the task j row i turns to at turn t. What
        # depends only on (i, t) is gathered up front, and the correction is
        # written without divisions: eager PyTorch pays per dispatched op.
        # With a = g_i' . g_j, b = |g_i'|^2, phi = a / (sqrt(b) |g_j|):
        # w = T / (|g_j| sqrt(1 - T^2)) sqrt(b - a^2 / |g_j|^2) - a / |g_j|^2.
        picks = ops.one_hot(orders, n, dtype=gram.dtype)
        picked_gram = picks @ gram
        other = ops.cast(ops.not_equal(orders, ops.arange(n)[:, None]), gram.dtype)
        norm_j = ops.sum(picks * ops.sqrt(ops.relu(ops.diagonal(gram))), axis=2)
        inverse_square = ops.divide_no_nan(other, norm_j**2)
        target = ops.minimum(ops.sum(picks * targets[:, None, :], axis=2), MAX_TARGET)
        scale = ops.divide_no_nan(target * other, norm_j * ops.sqrt(1.0 - target**2))
        rows = ops.eye(n, dtype=gram.dtype)  # row i: g_i' as a combination
        rows_gram = gram  # rows @ gram
        dots, norms = [], []
        for t in range(n):
            a = ops.sum(rows_gram * picks[:, t], axis=1)
            root_b = ops.sqrt(ops.relu(ops.sum(rows * rows_gram, axis=1)))
            inverse = inverse_square[:, t]
            w = scale[:, t] * ops.sqrt(ops.relu(root_b**2 - a * a * inverse))
            conflict = ops.cast(a < target[:, t] * root_b * norm_j[:, t], w.dtype)
            w = (w - a * inverse) * conflict
            rows = rows + w[:, None] * picks[:, t]
            rows_gram = rows_gram + w[:, None] * picked_gram[:, t]
            dots.append(a)
            norms.append(root_b)
        if training:
            dots, norms = ops.stack(dots, axis=1), ops.stack(norms, axis=1)
            phi = ops.clip(ops.divide_no_nan(dots, norms * norm_j), -1.0, 1.0)
            seen = ops.sum((phi * other)[:, :, None] * picks, axis=1)  # phi_ij
            off_diagonal = 1.0 - ops.eye(n, dtype=gram.dtype)
            moved = targets + self.beta * (seen - targets) * off_diagonal
            if not everyone:
                change = ops.transpose(select) @ (moved - targets) @ select
                moved = all_targets + change
            skipped = ops.logical_not(ops.any(gram != 0.0))
            self.targets.assign(ops.where(skipped, all_targets, moved))
        a = ops.sum(rows, axis=0)
        return Coefficients(a, ops.ones((n,), gram.dtype))

    def get_config(self):
        return {**super().get_config(), "beta": self.beta, "seed": self.seed}
