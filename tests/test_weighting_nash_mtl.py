"""`NashMTL` against the bargaining equation `G alpha = 1 / alpha`, solved
in float64 by scipy's `least_squares` (as the FairGrad authors do)."""

import numpy as np
import pytest
from scipy import optimize

from joint_keras.weighting.nash_mtl import NashMTL
from tests.reference import strategy_coefficients as coefficients

CONFLICTING = np.array([[1.0, 0.0], [-1.0, 1.0]])
ALIGNED = np.array([[1.0, 0.5], [0.5, 1.0]])
THREE = np.array([[1.0, 0.2, 0.0], [-0.8, 1.0, 0.3], [0.1, -0.9, 1.0]])
THREE_ALIGNED = np.array([[2.0, 0.2, 0.0], [0.3, 1.0, 0.3], [0.1, 0.1, 0.5]])


def nash_by_hand(jac):
    gram = jac @ jac.T
    result = optimize.least_squares(
        lambda w: gram @ w - 1.0 / w,
        np.ones(len(jac)),
        bounds=(1e-12, np.inf),
        xtol=1e-15,
        ftol=1e-15,
        gtol=1e-15,
    )
    return result.x


@pytest.mark.parametrize(
    "jac", [CONFLICTING, ALIGNED, THREE, THREE_ALIGNED], ids=["c2", "a2", "c3", "a3"]
)
def test_nash_mtl_solves_the_bargaining_equation(jac):
    a, b = coefficients(NashMTL(), jac)
    np.testing.assert_allclose(a, nash_by_hand(jac), rtol=1e-5)
    np.testing.assert_allclose(b, np.ones(len(jac)))
    d = a @ jac
    # Each task's improvement is 1 / alpha_k, and |d|^2 = K.
    np.testing.assert_allclose(jac @ d, 1.0 / a, rtol=1e-5)
    np.testing.assert_allclose(d @ d, len(jac), rtol=1e-5)


def test_nash_mtl_is_invariant_to_loss_scales_and_task_order():
    a, _ = coefficients(NashMTL(), THREE)
    scales = np.array([[10.0], [0.1], [3.0]])
    scaled, _ = coefficients(NashMTL(), scales * THREE)
    np.testing.assert_allclose(scaled @ (scales * THREE), a @ THREE, rtol=1e-5)
    perm = [2, 0, 1]
    np.testing.assert_allclose(
        coefficients(NashMTL(), THREE[perm])[0], a[perm], rtol=1e-5
    )


def test_nash_mtl_stops_at_pareto_stationary_points():
    # 0 is in the convex hull: no solution, no shared update.
    for jac in (
        np.array([[1.0, 0.0], [-2.0, 0.0]]),
        np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-1.0, -1.0, 0.0]]),
        np.zeros((2, 3)),
    ):
        a, b = coefficients(NashMTL(), jac)
        np.testing.assert_array_equal(a, np.zeros(len(jac)))
        np.testing.assert_array_equal(b, np.ones(len(jac)))
