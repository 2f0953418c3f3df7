"""`ConFIG` against the paper's update, computed in float64 from the unit
gradients with numpy's pseudo-inverse."""

import numpy as np
import pytest

from joint_keras.weighting.config import ConFIG
from tests.reference import strategy_coefficients as coefficients

CONFLICTING = np.array([[1.0, 0.0], [-1.0, 1.0]])
ALIGNED = np.array([[1.0, 0.5], [0.5, 1.0]])
THREE = np.array([[1.0, 0.2, 0.0], [-0.8, 1.0, 0.3], [0.1, -0.9, 1.0]])
# Three gradients in a plane: U U^T is singular; the pseudo-inverse decides.
THREE_IN_A_PLANE = np.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-1.0, 3.0, 0.0]])


def config_by_hand(jac):
    """`x = pinv(U) 1`, `u = x / |x|`, update `(sum_k g_k . u) u`; zero
    gradients' unit vectors are 0, as in the authors' code."""
    norms = np.linalg.norm(jac, axis=1, keepdims=True)
    units = np.divide(jac, norms, out=np.zeros_like(jac), where=norms > 0)
    x = np.linalg.pinv(units) @ np.ones(len(jac))
    unit = x / np.linalg.norm(x)
    return np.sum(jac @ unit) * unit


@pytest.mark.parametrize(
    "jac",
    [CONFLICTING, ALIGNED, THREE, THREE_IN_A_PLANE],
    ids=["c2", "a2", "c3", "plane3"],
)
def test_config_matches_the_pseudo_inverse_update(jac):
    a, b = coefficients(ConFIG(), jac)
    want = config_by_hand(jac)
    np.testing.assert_allclose(a @ jac, want, atol=1e-5 * np.abs(want).max())
    np.testing.assert_allclose(b, np.ones(len(jac)))


@pytest.mark.parametrize("jac", [CONFLICTING, ALIGNED, THREE], ids=["c2", "a2", "c3"])
def test_config_is_at_equal_angles_and_conflict_free(jac):
    a, _ = coefficients(ConFIG(), jac)
    d = a @ jac
    cosines = jac @ d / np.linalg.norm(jac, axis=1) / np.linalg.norm(d)
    np.testing.assert_allclose(cosines, cosines[0], atol=1e-5)
    assert cosines[0] > 0
    perm = [1, 0] if len(jac) == 2 else [2, 0, 1]
    np.testing.assert_allclose(coefficients(ConFIG(), jac[perm])[0], a[perm], atol=1e-5)


def test_config_leaves_out_zero_gradients():
    jac = np.array([[3.0, 0.0], [0.0, 0.0]])
    a, _ = coefficients(ConFIG(), jac)
    np.testing.assert_allclose(a @ jac, config_by_hand(jac), atol=1e-6)
    np.testing.assert_array_equal(coefficients(ConFIG(), np.zeros((2, 2)))[0], [0, 0])
