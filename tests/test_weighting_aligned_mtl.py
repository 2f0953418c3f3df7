"""`AlignedMTL` against the aligned gradients `s U V^T` of the paper,
computed in float64 from the SVD of the Jacobian itself."""

import numpy as np
import pytest

from joint_keras.weighting.aligned_mtl import AlignedMTL
from tests.reference import strategy_coefficients as coefficients

CONFLICTING = np.array([[1.0, 0.0], [-1.0, 1.0]])
ALIGNED = np.array([[1.0, 0.5], [0.5, 1.0]])
THREE = np.array([[1.0, 0.2, 0.0, 0.4], [-0.8, 1.0, 0.3, 0.0], [0.1, -0.9, 1.0, 0.2]])
THREE_ALIGNED = np.array([[2.0, 0.2, 0.0], [0.3, 1.0, 0.3], [0.1, 0.1, 0.5]])
RANK_TWO = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [1.0, 2.0, 0.0]])


def aligned_by_hand(jac, scale_mode="min"):
    """`J = U S V^T` (non-zero singular values only); the aligned rows
    `s U V^T`; the update is their sum."""
    u, s, vt = np.linalg.svd(jac, full_matrices=False)
    kept = s > s.max() * 1e-6
    u, s, vt = u[:, kept], s[kept], vt[kept]
    eigenvalues = np.sort(s**2)
    if scale_mode == "min":
        scale = s.min()
    elif scale_mode == "median":  # the lower median
        scale = np.sqrt(eigenvalues[(len(eigenvalues) - 1) // 2])
    else:
        scale = np.sqrt(eigenvalues.mean())
    return np.ones(len(jac)) @ (scale * u @ vt)


@pytest.mark.parametrize(
    "jac",
    [CONFLICTING, ALIGNED, THREE, THREE_ALIGNED, RANK_TWO],
    ids=["c2", "a2", "c3", "a3", "rank2"],
)
def test_aligned_mtl_sums_the_aligned_gradients(jac):
    a, b = coefficients(AlignedMTL(), jac)
    want = aligned_by_hand(jac)
    np.testing.assert_allclose(a @ jac, want, atol=1e-5 * np.abs(want).max())
    np.testing.assert_allclose(b, np.ones(len(jac)))


@pytest.mark.parametrize("mode", ["median", "rmse"])
@pytest.mark.parametrize("jac", [THREE, RANK_TWO, CONFLICTING], ids=["c3", "r2", "c2"])
def test_aligned_mtl_scale_modes(mode, jac):
    a, _ = coefficients(AlignedMTL(scale_mode=mode), jac)
    want = aligned_by_hand(jac, mode)
    np.testing.assert_allclose(a @ jac, want, atol=1e-5 * np.abs(want).max())


def test_aligned_mtl_balances_the_components():
    # Orthogonal gradients of norms 1 and 10: aligned to the smaller norm.
    jac = np.array([[1.0, 0.0], [0.0, 10.0]])
    a, _ = coefficients(AlignedMTL(), jac)
    np.testing.assert_allclose(a @ jac, [1.0, 1.0], atol=1e-5)
    perm = [2, 0, 1]
    a, _ = coefficients(AlignedMTL(), THREE)
    np.testing.assert_allclose(
        coefficients(AlignedMTL(), THREE[perm])[0], a[perm], atol=1e-5
    )
    np.testing.assert_array_equal(
        coefficients(AlignedMTL(), np.zeros((2, 2)))[0], [0, 0]
    )
    with pytest.raises(ValueError, match="scale_mode"):
        AlignedMTL(scale_mode="max")
    assert AlignedMTL.from_config(AlignedMTL("rmse").get_config()).scale_mode == "rmse"
