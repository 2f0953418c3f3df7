"""`DBMTL` against its formulas over several steps, written in float64
numpy on explicit gradient vectors, one training step against per-task
gradients computed by hand, and a save/load round trip."""

import keras
import numpy as np
import pytest
from keras import ops

import joint_keras as jk
from joint_keras.weighting.dbmtl import DBMTL
from tests import reference

CONFLICTING = np.array([[1.0, 0.0], [-1.0, 1.0]])
ALIGNED = np.array([[1.0, 0.5], [0.5, 1.0]])
THREE = np.array([[1.0, 0.2, 0.0], [-0.8, 1.0, 0.3], [0.1, -0.9, 1.0]])
THREE_ALIGNED = np.array([[2.0, 0.2, 0.0], [0.3, 1.0, 0.3], [0.1, 0.1, 0.5]])


def built(strategy, k):
    strategy.build_for_tasks([f"t{i}" for i in range(k)], [1.0] * k)
    return strategy


def step(strategy, jac, losses, indices=None, training=True):
    indices = list(range(len(jac))) if indices is None else indices
    gram = ops.convert_to_tensor((jac @ jac.T).astype("float32"))
    losses = ops.convert_to_tensor(np.asarray(losses, "float32"))
    a, b = strategy.coefficients(gram, losses, indices, training)
    return ops.convert_to_numpy(a).astype("float64"), ops.convert_to_numpy(b)


class DbmtlByHand:
    """Log-loss gradients `g_k / L_k`, an EMA `h` of their norms, and the
    sum of the log-loss gradients scaled to the largest `h`."""

    def __init__(self, k, beta, beta_sigma):
        self.h, self.t = np.zeros(k), np.zeros(k)
        self.beta, self.beta_sigma = beta, beta_sigma

    def step(self, jac, losses):
        log_grads = jac / (np.asarray(losses)[:, None] + 1e-8)
        self.t += 1
        rate = self.beta / self.t**self.beta_sigma
        self.h = rate * self.h + (1 - rate) * np.linalg.norm(log_grads, axis=1)
        return (self.h.max() / self.h) @ log_grads


@pytest.mark.parametrize("beta_sigma", [0.0, 0.5])
@pytest.mark.parametrize("k", [2, 3])
def test_dbmtl_over_three_steps(k, beta_sigma):
    jacs = (
        [CONFLICTING, ALIGNED, 2 * CONFLICTING]
        if k == 2
        else [THREE, THREE_ALIGNED, THREE]
    )
    losses = [[2.0, 0.5, 1.0], [1.5, 0.4, 0.1], [1.0, 0.45, 0.05]]
    strategy = built(DBMTL(beta=0.9, beta_sigma=beta_sigma), k)
    by_hand = DbmtlByHand(k, 0.9, beta_sigma)
    for jac, loss in zip(jacs, losses):
        loss = loss[:k]
        a, b = step(strategy, jac, loss)
        want = by_hand.step(jac, loss)
        np.testing.assert_allclose(a @ jac, want, rtol=1e-5)
        np.testing.assert_allclose(b, 1.0 / np.asarray(loss), rtol=1e-6)
        got = ops.convert_to_numpy(strategy.norm_average)
        np.testing.assert_allclose(got, by_hand.h, rtol=1e-5)
        np.testing.assert_allclose(ops.convert_to_numpy(strategy.steps), by_hand.t)
    # Every log-loss gradient on the shared variables has the largest norm.
    a, _ = step(built(DBMTL(), k), jacs[0], losses[0][:k])
    norms = np.linalg.norm(a[:, None] * jacs[0], axis=1)
    np.testing.assert_allclose(norms, norms.max(), rtol=1e-5)


def test_dbmtl_state_moves_only_in_training_and_for_present_tasks():
    strategy = built(DBMTL(), 3)
    step(strategy, THREE, [1.0, 2.0, 3.0])
    before = ops.convert_to_numpy(strategy.norm_average).copy()
    step(strategy, THREE_ALIGNED, [1.0, 2.0, 3.0], training=False)
    step(strategy, np.zeros((3, 2)), [1.0, 2.0, 3.0])  # a skipped step
    np.testing.assert_array_equal(ops.convert_to_numpy(strategy.norm_average), before)
    np.testing.assert_array_equal(ops.convert_to_numpy(strategy.steps), [1, 1, 1])
    step(strategy, THREE_ALIGNED[[0, 2]], [0.5, 0.5], indices=[0, 2])
    after = ops.convert_to_numpy(strategy.norm_average)
    norms = np.linalg.norm(THREE_ALIGNED[[0, 2]], axis=1) / 0.5
    np.testing.assert_allclose(
        after[[0, 2]], 0.9 * before[[0, 2]] + 0.1 * norms, rtol=1e-5
    )
    assert after[1] == before[1]
    np.testing.assert_array_equal(ops.convert_to_numpy(strategy.steps), [2, 1, 2])
    with pytest.raises(ValueError, match="beta"):
        DBMTL(beta=1.0)
    config = DBMTL(beta=0.5, beta_sigma=0.5).get_config()
    assert (config["beta"], config["beta_sigma"]) == (0.5, 0.5)


def shared_trunk(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(5, activation="tanh", name="trunk")(inputs)
    return {
        f"t{k}": keras.Model(inputs, keras.layers.Dense(1, name=f"head{k}")(hidden))
        for k in range(2)
    }


def task_data(n=32):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4)).astype("float32")
    return x, {"t0": 2 * x[:, :1], "t1": -5 * x[:, :1] + np.tanh(x[:, 1:2])}


def test_one_step_matches_log_losses_by_hand():
    submodels = shared_trunk()
    x, ys = task_data(16)
    trunk = submodels["t0"].get_layer("trunk").trainable_variables
    base = {"t0": 2.0, "t1": 1.0}
    losses, shared, own = [], [], []
    for name, model in submodels.items():
        head = model.layers[-1].trainable_variables
        loss, grads = reference.value_and_grad(
            lambda m=model, y=ys[name]: ops.mean(
                keras.losses.mean_squared_error(y, m(x))
            ),
            trunk + head,
        )
        losses.append(loss)
        shared.append(base[name] * np.concatenate([g.ravel() for g in grads[:2]]))
        own.append([base[name] * g / loss for g in grads[2:]])
    log_grads = np.array(shared) / np.array(losses)[:, None]
    norms = np.linalg.norm(log_grads, axis=1)
    direction = (norms.max() / norms) @ log_grads
    before = reference.weights_of(*submodels.values())
    joint = jk.JointModel(submodels)
    joint.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss="mse",
        loss_weights=base,
        weighting=DBMTL(),
    )
    joint.train_on_batch(x, ys)
    after = reference.weights_of(*submodels.values())
    offset = 0
    for i in (0, 1):  # trunk kernel and bias
        size = before[i].size
        want = before[i] - 0.1 * direction[offset : offset + size].reshape(
            before[i].shape
        )
        np.testing.assert_allclose(after[i], want, atol=1e-5)
        offset += size
    for i, g in zip(range(2, 6), own[0] + own[1]):  # each head, its log loss
        np.testing.assert_allclose(after[i], before[i] - 0.1 * g, atol=1e-5)
