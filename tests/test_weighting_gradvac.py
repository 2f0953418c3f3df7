"""`GradVac` against the paper's loop over explicit gradient vectors,
written in float64 with numpy, and its EMA targets over several steps."""

import itertools

import numpy as np
import pytest
from keras import ops

from joint_keras.weighting.gradvac import GradVac

CONFLICTING = np.array([[1.0, 0.0], [-1.0, 1.0]])
ALIGNED = np.array([[1.0, 0.5], [0.5, 1.0]])
SLIGHTLY_ALIGNED = np.array([[1.0, 0.0], [0.1, 1.0]])
THREE = np.array([[1.0, 0.2, 0.0], [-0.8, 1.0, 0.3], [0.1, -0.9, 1.0]])
THREE_ALIGNED = np.array([[2.0, 0.2, 0.0], [0.3, 1.0, 0.3], [0.1, 0.1, 0.5]])


def built(strategy, k):
    strategy.build_for_tasks([f"t{i}" for i in range(k)], [1.0] * k)
    return strategy


def step(strategy, jac, indices=None, training=True):
    indices = list(range(len(jac))) if indices is None else indices
    gram = ops.convert_to_tensor((jac @ jac.T).astype("float32"))
    a, b = strategy.coefficients(gram, ops.ones((len(jac),)), indices, training)
    return ops.convert_to_numpy(a).astype("float64") @ jac, ops.convert_to_numpy(b)


def targets_of(strategy):
    return ops.convert_to_numpy(strategy.targets).astype("float64")


def gradvac_by_hand(jac, targets, beta, orders):
    """The paper's Algorithm 1 with the visiting order `orders[i]`."""
    corrected, targets = jac.copy(), targets.copy()
    for i in range(len(jac)):
        for j in orders[i]:
            gi, gj = corrected[i], jac[j]
            phi = gi @ gj / (np.linalg.norm(gi) * np.linalg.norm(gj))
            t = targets[i, j]
            if phi < t:
                corrected[i] = gi + (
                    np.linalg.norm(gi)
                    * (t * np.sqrt(1 - phi**2) - phi * np.sqrt(1 - t**2))
                    / (np.linalg.norm(gj) * np.sqrt(1 - t**2))
                    * gj
                )
            targets[i, j] = (1 - beta) * t + beta * phi
    return corrected.sum(axis=0), targets


def all_orders(k):
    """Every choice of a visiting order for each task."""
    per_task = [list(itertools.permutations(set(range(k)) - {i})) for i in range(k)]
    return list(itertools.product(*per_task))


def test_gradvac_two_tasks_over_three_steps():
    strategy = built(GradVac(beta=0.5), 2)
    targets = np.zeros((2, 2))
    # Aligned (no correction; the targets rise), then less aligned than the
    # targets (corrected up to them), then conflicting.
    for jac in (ALIGNED, SLIGHTLY_ALIGNED, CONFLICTING):
        want, targets = gradvac_by_hand(jac, targets, 0.5, [[1], [0]])
        got, other = step(strategy, jac)
        np.testing.assert_allclose(got, want, atol=1e-5)
        np.testing.assert_allclose(targets_of(strategy), targets, atol=1e-6)
        np.testing.assert_allclose(other, [1.0, 1.0])
    # With zero targets and conflicting gradients, GradVac is PCGrad.
    fresh = built(GradVac(), 2)
    got, _ = step(fresh, CONFLICTING)
    np.testing.assert_allclose(got, [0.5, 1.5], atol=1e-6)


@pytest.mark.parametrize("jac", [THREE, THREE_ALIGNED], ids=["c3", "a3"])
def test_gradvac_three_tasks_follow_one_of_the_orders(jac):
    strategy = built(GradVac(beta=0.5, seed=3), 3)
    targets = np.zeros((3, 3))
    for call in range(3):
        got, _ = step(strategy, jac if call != 1 else jac[::-1].copy())
        current = jac if call != 1 else jac[::-1].copy()
        candidates = [gradvac_by_hand(current, targets, 0.5, o) for o in all_orders(3)]
        state = targets_of(strategy)
        errors = [
            max(np.abs(got - d).max(), np.abs(state - t).max()) for d, t in candidates
        ]
        assert min(errors) < 1e-5, errors
        targets = candidates[int(np.argmin(errors))][1]


def test_gradvac_state_moves_only_in_training_and_for_present_tasks():
    strategy = built(GradVac(beta=0.5), 3)
    step(strategy, THREE)
    before = targets_of(strategy)
    step(strategy, THREE_ALIGNED, training=False)
    np.testing.assert_array_equal(targets_of(strategy), before)
    step(strategy, np.zeros((3, 2)))  # all-zero gradients: a skipped step
    np.testing.assert_array_equal(targets_of(strategy), before)
    # Tasks 0 and 2 only: their pair moves, as a two-task problem.
    sub = THREE_ALIGNED[[0, 2]]
    got, _ = step(strategy, sub, indices=[0, 2])
    want, sub_targets = gradvac_by_hand(
        sub, before[np.ix_([0, 2], [0, 2])], 0.5, [[1], [0]]
    )
    np.testing.assert_allclose(got, want, atol=1e-5)
    expected = before.copy()
    expected[np.ix_([0, 2], [0, 2])] = sub_targets
    np.testing.assert_allclose(targets_of(strategy), expected, atol=1e-6)
