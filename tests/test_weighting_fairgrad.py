"""`FairGrad` against its equation `G w = w^(-1/alpha)`, solved in float64
by scipy's `least_squares`, as the authors' code does."""

import numpy as np
import pytest
from scipy import optimize

from joint_keras.weighting.fairgrad import FairGrad
from tests.reference import strategy_coefficients as coefficients

CONFLICTING = np.array([[1.0, 0.0], [-1.0, 1.0]])
ALIGNED = np.array([[1.0, 0.5], [0.5, 1.0]])
THREE = np.array([[1.0, 0.2, 0.0], [-0.8, 1.0, 0.3], [0.1, -0.9, 1.0]])
THREE_ALIGNED = np.array([[2.0, 0.2, 0.0], [0.3, 1.0, 0.3], [0.1, 0.1, 0.5]])


def fairgrad_by_hand(jac, alpha):
    gram = jac @ jac.T
    result = optimize.least_squares(
        lambda w: gram @ w - (1.0 / w) ** (1.0 / alpha),
        np.ones(len(jac)) / len(jac),
        bounds=(1e-12, np.inf),
        xtol=1e-15,
        ftol=1e-15,
        gtol=1e-15,
    )
    return result.x


@pytest.mark.parametrize(
    "jac, alpha",
    [
        (CONFLICTING, 0.5),
        (CONFLICTING, 2.0),
        (ALIGNED, 0.5),
        (ALIGNED, 2.0),
        (THREE, 1.0),
        (THREE, 2.0),
        (THREE_ALIGNED, 0.5),
        (THREE_ALIGNED, 5.0),
    ],
)
def test_fairgrad_solves_its_equation(jac, alpha):
    a, b = coefficients(FairGrad(alpha=alpha), jac)
    np.testing.assert_allclose(a, fairgrad_by_hand(jac, alpha), rtol=1e-5)
    np.testing.assert_allclose(b, np.ones(len(jac)))
    # Task k's first-order improvement is w_k^(-1/alpha).
    np.testing.assert_allclose(jac @ (a @ jac), a ** (-1.0 / alpha), rtol=1e-5)


def test_fairgrad_alpha_moves_towards_max_min_fairness():
    # Larger alpha: the improvements g_k . d get closer to each other.
    spread = []
    for alpha in (0.5, 1.0, 2.0, 5.0):
        a, _ = coefficients(FairGrad(alpha=alpha), THREE)
        gains = THREE @ (a @ THREE)
        spread.append(gains.max() / gains.min())
    assert spread == sorted(spread, reverse=True)
    perm = [2, 0, 1]
    a, _ = coefficients(FairGrad(alpha=2.0), THREE)
    permuted = coefficients(FairGrad(alpha=2.0), THREE[perm])[0]
    np.testing.assert_allclose(permuted, a[perm], rtol=1e-5)


def test_fairgrad_stops_at_pareto_stationary_points_and_checks_alpha():
    for jac in (np.array([[1.0, 0.0], [-2.0, 0.0]]), np.zeros((2, 3))):
        np.testing.assert_array_equal(coefficients(FairGrad(), jac)[0], [0.0, 0.0])
    with pytest.raises(ValueError, match="alpha"):
        FairGrad(alpha=0.0)
    assert FairGrad.from_config(FairGrad(alpha=2.0).get_config()).alpha == 2.0
