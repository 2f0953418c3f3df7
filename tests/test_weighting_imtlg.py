"""`IMTLG` against the paper's closed form, computed in float64."""

import numpy as np
import pytest

from joint_keras.weighting.imtlg import IMTLG
from tests.reference import strategy_coefficients as coefficients

CONFLICTING = np.array([[1.0, 0.0], [-1.0, 1.0]])
ALIGNED = np.array([[1.0, 0.5], [0.5, 1.0]])
THREE = np.array([[1.0, 0.2, 0.0], [-0.8, 1.0, 0.3], [0.1, -0.9, 1.0]])
THREE_ALIGNED = np.array([[2.0, 0.2, 0.0], [0.3, 1.0, 0.3], [0.1, 0.1, 0.5]])


def imtlg_by_hand(jac):
    """The paper's Eq.: `a_{2:K} = g_1 U^T (D U^T)^-1`, `a_1 = 1 - sum`,
    with rows `D_k = g_1 - g_k`, `U_k = u_1 - u_k`."""
    units = jac / np.linalg.norm(jac, axis=1, keepdims=True)
    d = jac[0] - jac[1:]
    u = units[0] - units[1:]
    rest = jac[0] @ u.T @ np.linalg.inv(d @ u.T)
    return np.concatenate([[1.0 - rest.sum()], rest])


@pytest.mark.parametrize(
    "jac", [CONFLICTING, ALIGNED, THREE, THREE_ALIGNED], ids=["c2", "a2", "c3", "a3"]
)
def test_imtlg_matches_the_closed_form(jac):
    a, b = coefficients(IMTLG(), jac)
    np.testing.assert_allclose(a, imtlg_by_hand(jac), atol=1e-5)
    np.testing.assert_allclose(b, np.ones(len(jac)))
    # Impartial: equal projections onto every unit gradient, weights sum 1.
    units = jac / np.linalg.norm(jac, axis=1, keepdims=True)
    projections = units @ (a @ jac)
    np.testing.assert_allclose(projections, projections[0], atol=1e-5)
    np.testing.assert_allclose(a.sum(), 1.0, atol=1e-6)


def test_imtlg_is_permutation_equivariant_and_handles_dependent_gradients():
    perm = [1, 2, 0]
    a, _ = coefficients(IMTLG(), THREE)
    np.testing.assert_allclose(
        coefficients(IMTLG(), THREE[perm])[0], a[perm], atol=1e-5
    )
    # Two equal gradients: the paper's system is singular; any weights
    # summing to 1 give the gradient itself.
    same = np.array([[1.0, 2.0], [1.0, 2.0]])
    a, _ = coefficients(IMTLG(), same)
    np.testing.assert_allclose(a @ same, same[0], atol=1e-5)
    # Opposite gradients: no direction has equal projections; zero weights.
    a, _ = coefficients(IMTLG(), np.array([[1.0, 0.0], [-2.0, 0.0]]))
    np.testing.assert_allclose(a, [0.0, 0.0], atol=1e-6)
    a, _ = coefficients(IMTLG(), np.zeros((2, 3)))
    np.testing.assert_array_equal(a, [0.0, 0.0])
