"""`FAMO`: its weights and logit updates over several steps against the
paper's formulas with Adam written out in float64 numpy, and a save/load
round trip."""

import numpy as np
import pytest
from keras import ops

from joint_keras.weighting.famo import FAMO

LOSSES = [[1.0, 4.0, 0.5], [0.8, 3.9, 0.3], [0.7, 3.0, 0.31], [0.5, 2.0, 0.2]]


def built(strategy, k, base=None):
    strategy.build_for_tasks([f"t{i}" for i in range(k)], base or [1.0] * k)
    return strategy


def weights(strategy, losses, indices=None, training=True):
    indices = list(range(len(losses))) if indices is None else indices
    w = strategy.step_weights(ops.convert_to_tensor(losses), indices, training)
    return ops.convert_to_numpy(w).astype("float64")


def state(strategy):
    return {v.name: ops.convert_to_numpy(v).copy() for v in strategy.weights}


class FamoByHand:
    """Algorithm 1, delayed by one step, with Adam (L2 decay `gamma`)."""

    def __init__(self, k, gamma, lr):
        self.xi, self.m, self.v = np.zeros(k), np.zeros(k), np.zeros(k)
        self.t, self.previous, self.gamma, self.lr = 0, None, gamma, lr

    def step(self, losses):
        losses = np.asarray(losses) + 1e-8
        if self.previous is not None:
            delta = np.log(self.previous) - np.log(losses)
            z = np.exp(self.xi) / np.exp(self.xi).sum()
            grad = z * delta - z * (z @ delta) + self.gamma * self.xi
            self.t += 1
            self.m = 0.9 * self.m + 0.1 * grad
            self.v = 0.999 * self.v + 0.001 * grad**2
            m_hat = self.m / (1 - 0.9**self.t)
            v_hat = self.v / (1 - 0.999**self.t)
            self.xi = self.xi - self.lr * m_hat / (np.sqrt(v_hat) + 1e-8)
        self.previous = losses
        z = np.exp(self.xi) / np.exp(self.xi).sum()
        return z / (np.sum(z / losses) * losses)


@pytest.mark.parametrize("k", [2, 3])
def test_famo_weights_and_logits_over_steps(k):
    strategy = built(FAMO(gamma=0.01, learning_rate=0.1), k)
    by_hand = FamoByHand(k, 0.01, 0.1)
    for losses in LOSSES:
        losses = losses[:k]
        np.testing.assert_allclose(
            weights(strategy, losses), by_hand.step(losses), rtol=1e-5
        )
        got = ops.convert_to_numpy(strategy.logits)
        np.testing.assert_allclose(got, by_hand.xi, rtol=1e-5, atol=1e-7)
    # The first step: uniform z, so w_k = 1 / (L_k sum_j 1 / L_j).
    fresh = built(FAMO(), 2)
    np.testing.assert_allclose(weights(fresh, [1.0, 3.0]), [0.75, 0.25], rtol=1e-6)
    # A task whose loss went down less gains weight.
    strategy = built(FAMO(learning_rate=0.1), 2)
    weights(strategy, [1.0, 1.0])
    w = weights(strategy, [0.5, 0.9])
    assert ops.convert_to_numpy(strategy.logits)[1] > 0 and w[1] > w[0] * 0.5 / 0.9


def test_famo_state_moves_only_in_training_and_for_present_tasks():
    strategy = built(FAMO(learning_rate=0.1), 3, base=[2.0, 1.0, 1.0])
    by_hand = FamoByHand(3, 0.01, 0.1)
    for losses in LOSSES[:2]:
        np.testing.assert_allclose(
            weights(strategy, losses), [2, 1, 1] * by_hand.step(losses), rtol=1e-5
        )
    before = state(strategy)
    weights(strategy, LOSSES[2], training=False)
    for name, value in state(strategy).items():
        np.testing.assert_array_equal(value, before[name])
    # Tasks 0 and 2 only: their logits, moments and losses move, as a
    # two-task problem on their entries; task 1 keeps its state.
    sub = FamoByHand(2, 0.01, 0.1)
    sub.xi, sub.previous = before["logits"][[0, 2]], before["previous_losses"][[0, 2]]
    sub.m, sub.v = before["moment"][[0, 2]], before["second_moment"][[0, 2]]
    sub.t = 1
    want = sub.step([LOSSES[2][0], LOSSES[2][2]])
    got = weights(strategy, [LOSSES[2][0], LOSSES[2][2]], indices=[0, 2])
    np.testing.assert_allclose(got, [2, 1] * want, rtol=1e-5)
    after = state(strategy)
    np.testing.assert_allclose(after["logits"][[0, 2]], sub.xi, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(after["steps"], [2, 1, 2])
    for name in ("logits", "previous_losses", "moment", "second_moment"):
        assert after[name][1] == before[name][1]


def test_famo_checks_its_arguments():
    with pytest.raises(ValueError, match="gamma"):
        FAMO(gamma=-1.0)
    with pytest.raises(ValueError, match="learning_rate"):
        FAMO(learning_rate=0.0)
    config = FAMO(gamma=0.001, learning_rate=0.05).get_config()
    assert (config["gamma"], config["learning_rate"]) == (0.001, 0.05)
