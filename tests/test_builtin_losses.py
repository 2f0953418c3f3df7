"""Built-in joint losses against their formulas, computed in NumPy."""

import keras
import numpy as np
import pytest
from keras import ops

import joint_keras as jk
from tests import reference


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def kl(p, q):
    return np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=-1))


@pytest.mark.parametrize("from_logits", [False, True])
def test_mutual_kl_matches_its_formula(from_logits):
    rng = np.random.default_rng(0)
    logits = {m: rng.normal(size=(8, 5)).astype("float32") for m in "abc"}
    outputs = logits if from_logits else {m: softmax(z) for m, z in logits.items()}
    loss = jk.losses.MutualKL(["a", "b", "c"], temperature=2.0, from_logits=from_logits)
    p = {m: softmax(z / 2.0) for m, z in logits.items()}
    pairs = [(i, j) for i in "abc" for j in "abc" if i != j]
    want = 4.0 * np.mean([kl(p[j], p[i]) for i, j in pairs])
    got = ops.convert_to_numpy(
        loss(None, {m: ops.convert_to_tensor(o) for m, o in outputs.items()})
    )
    np.testing.assert_allclose(got, want, rtol=1e-4)


def test_mutual_kl_trains_through_joint_model_like_a_hand_step():
    def net(name):
        return keras.Sequential(
            [keras.Input((4,)), keras.layers.Dense(3, activation="softmax")], name=name
        )

    a, b = net("a"), net("b")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(16, 4)).astype("float32")
    y = rng.integers(0, 3, size=(16,))
    variables = reference.unique_variables(a, b)

    def total():
        pa, pb = a(x), b(x)
        ce = keras.losses.sparse_categorical_crossentropy
        la, lb = ops.log(pa), ops.log(pb)
        mutual = 0.5 * (
            ops.mean(ops.sum(ops.stop_gradient(pb) * (ops.stop_gradient(lb) - la), -1))
            + ops.mean(
                ops.sum(ops.stop_gradient(pa) * (ops.stop_gradient(la) - lb), -1)
            )
        )
        return ops.mean(ce(y, pa)) + ops.mean(ce(y, pb)) + 0.5 * mutual

    want_loss, want_weights = reference.sgd_step(total, variables, 0.1)
    joint = jk.JointModel({"a": a, "b": b})
    joint.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss="sparse_categorical_crossentropy",
        joint_losses=[jk.losses.MutualKL(["a", "b"], weight=0.5)],
    )
    logs = joint.train_on_batch(x, y, return_dict=True)
    np.testing.assert_allclose(logs["loss"], want_loss, rtol=1e-5)
    for got, want in zip(reference.weights_of(a, b), want_weights):
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_mutual_kl_round_trips_and_checks_arguments():
    loss = jk.losses.MutualKL(["a", "b"], temperature=3.0, weight=0.2)
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(loss)
    )
    assert isinstance(restored, jk.losses.MutualKL)
    assert restored.get_config() == loss.get_config()
    with pytest.raises(ValueError, match="at least two"):
        jk.losses.MutualKL(["a"])
    with pytest.raises(ValueError, match="`temperature` must be positive"):
        jk.losses.MutualKL(["a", "b"], temperature=0.0)
