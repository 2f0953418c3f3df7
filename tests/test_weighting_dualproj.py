"""`DualProj` against the projection of the mean gradient onto the dual
cone, computed in float64 in the primal by enumerating active sets."""

import itertools

import numpy as np
import pytest

from joint_keras.weighting.dualproj import DualProj
from tests.reference import strategy_coefficients as coefficients

CONFLICTING = np.array([[1.0, 0.0], [-1.0, 1.0]])
ALIGNED = np.array([[1.0, 0.5], [0.5, 1.0]])
THREE_CONFLICTING = np.array([[1.0, 0.0, 0.0], [-0.9, 0.5, 0.1], [0.1, -0.6, 1.0]])
THREE_ALIGNED = np.array([[1.0, 0.2, 0.0], [0.3, 1.0, 0.3], [0.1, 0.1, 1.0]])


def project_onto_dual_cone(jac, y):
    """`argmin |x - y|^2` s.t. `J x >= 0`: the KKT point among all active
    sets `S` (`x = y + J_S^T lam`, `J_S x = 0`, `lam >= 0`, `J x >= 0`)."""
    best = None
    for size in range(len(jac) + 1):
        for active in itertools.combinations(range(len(jac)), size):
            rows = jac[list(active)]
            lam = np.linalg.lstsq(rows @ rows.T, -rows @ y, rcond=None)[0]
            x = y + rows.T @ lam
            if np.all(lam >= -1e-12) and np.all(jac @ x >= -1e-12):
                if best is None or np.sum((x - y) ** 2) < np.sum((best - y) ** 2):
                    best = x
    return best


@pytest.mark.parametrize(
    "jac",
    [CONFLICTING, ALIGNED, THREE_CONFLICTING, THREE_ALIGNED],
    ids=["two_conflicting", "two_aligned", "three_conflicting", "three_aligned"],
)
def test_dualproj_projects_the_mean_onto_the_dual_cone(jac):
    a, b = coefficients(DualProj(), jac)
    want = project_onto_dual_cone(jac, jac.mean(axis=0))
    np.testing.assert_allclose(a @ jac, want, atol=1e-5)
    np.testing.assert_allclose(b, np.ones(len(jac)))
    scale = np.abs(jac).max() ** 2
    assert np.all(jac @ (a @ jac) >= -1e-6 * scale)


def test_dualproj_keeps_a_non_conflicting_mean_and_moves_a_conflicting_one():
    for jac in (ALIGNED, THREE_ALIGNED):
        assert np.all(jac @ jac.mean(axis=0) > 0)
        np.testing.assert_allclose(coefficients(DualProj(), jac)[0], 1 / len(jac))
    # The mean conflicts with task 1 here: the projection is not the mean,
    # and it no longer conflicts (task 1 is orthogonal to it).
    mean = THREE_CONFLICTING.mean(axis=0)
    assert (THREE_CONFLICTING @ mean)[1] < 0
    a, _ = coefficients(DualProj(), THREE_CONFLICTING)
    assert np.abs(a - 1 / 3).max() > 1e-2
    np.testing.assert_allclose(
        (THREE_CONFLICTING @ (a @ THREE_CONFLICTING))[1], 0.0, atol=1e-6
    )


def test_dualproj_is_permutation_equivariant_and_scale_free():
    perm = [2, 0, 1]
    a, _ = coefficients(DualProj(), THREE_CONFLICTING)
    permuted, _ = coefficients(DualProj(), THREE_CONFLICTING[perm])
    np.testing.assert_allclose(permuted, a[perm], atol=1e-6)
    scaled, _ = coefficients(DualProj(), 1e3 * THREE_CONFLICTING)
    np.testing.assert_allclose(scaled, a, rtol=1e-5)
