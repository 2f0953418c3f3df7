"""Three usual situations of joint training, checked by hand: two models
fitting one MSE target; two models with different losses and loss weights;
two models sharing a layer, which must be updated once per step.

Each is trained one SGD step with `JointModel` and compared with the same
step written by hand (`tf.GradientTape`, `jax.value_and_grad` or
`torch.autograd`, see `reference.py`): same total loss, same new weights.
"""

import keras
import numpy as np
import pytest
from keras import ops

import joint_keras as jk
from tests import reference

LEARNING_RATE = 0.1
ATOL = 1e-5


def dense_pair(hidden1=64, hidden2=32):
    model1 = keras.Sequential(
        [
            keras.Input((10,)),
            keras.layers.Dense(hidden1, activation="relu"),
            keras.layers.Dense(1),
        ],
        name="model1",
    )
    model2 = keras.Sequential(
        [
            keras.Input((10,)),
            keras.layers.Dense(hidden2, activation="relu"),
            keras.layers.Dense(1),
        ],
        name="model2",
    )
    return model1, model2


def data(n=32):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 10)).astype("float32")
    y = rng.normal(size=(n, 1)).astype("float32")
    return x, y


def mean_loss(fn, y, y_pred):
    # The reference document adds per-sample loss vectors, so its gradient
    # is that of a sum over the batch; the intent is the batch mean.
    return ops.mean(fn(y, y_pred))


def joint_sgd_step(models, x, y, **compile_kwargs):
    joint = jk.JointModel(models)
    joint.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE), **compile_kwargs)
    logs = joint.train_on_batch(x, y, return_dict=True)
    return logs


def assert_weights(models, expected):
    for got, want in zip(reference.weights_of(*models), expected):
        np.testing.assert_allclose(got, want, atol=ATOL, rtol=1e-5)


def test_situation_1_two_models_share_one_mse_target():
    model1, model2 = dense_pair()
    x, y = data()
    variables = reference.unique_variables(model1, model2)

    def total():
        return mean_loss(keras.losses.mean_squared_error, y, model1(x)) + (
            mean_loss(keras.losses.mean_squared_error, y, model2(x))
        )

    want_loss, want_weights = reference.sgd_step(total, variables, LEARNING_RATE)
    logs = joint_sgd_step({"model1": model1, "model2": model2}, x, y, loss="mse")

    np.testing.assert_allclose(logs["loss"], want_loss, rtol=1e-5)
    np.testing.assert_allclose(
        logs["model1_loss"] + logs["model2_loss"], want_loss, rtol=1e-5
    )
    assert_weights((model1, model2), want_weights)


def test_situation_2_different_losses_with_weights():
    model1, model2 = dense_pair()
    x, y = data()
    variables = reference.unique_variables(model1, model2)

    def total():
        return 0.7 * mean_loss(
            keras.losses.mean_squared_error, y, model1(x)
        ) + 0.3 * mean_loss(keras.losses.mean_absolute_error, y, model2(x))

    want_loss, want_weights = reference.sgd_step(total, variables, LEARNING_RATE)
    logs = joint_sgd_step(
        {"model1": model1, "model2": model2},
        x,
        y,
        loss={"model1": "mse", "model2": "mae"},
        loss_weights={"model1": 0.7, "model2": 0.3},
    )

    np.testing.assert_allclose(logs["loss"], want_loss, rtol=1e-5)
    np.testing.assert_allclose(
        0.7 * logs["model1_loss"] + 0.3 * logs["model2_loss"],
        want_loss,
        rtol=1e-5,
    )
    assert_weights((model1, model2), want_weights)


def shared_layer_pair():
    # The document feeds a 64-wide and a 16-wide tensor into one shared
    # Dense, which Keras 3 rejects; its intent is two private encoders
    # meeting in a shared layer, so both encoders end 16 wide here.
    shared = keras.layers.Dense(32, activation="relu", name="shared")
    model1 = keras.Sequential(
        [
            keras.Input((10,)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(16, activation="relu"),
            shared,
            keras.layers.Dense(1),
        ],
        name="model1",
    )
    model2 = keras.Sequential(
        [
            keras.Input((10,)),
            keras.layers.Dense(16, activation="relu"),
            shared,
            keras.layers.Dense(1),
        ],
        name="model2",
    )
    return model1, model2, shared


def test_situation_3_shared_layer_is_updated_once():
    model1, model2, shared = shared_layer_pair()
    x, y = data()
    variables = reference.unique_variables(model1, model2)
    assert len(variables) == len(model1.trainable_variables) + len(
        model2.trainable_variables
    ) - len(shared.trainable_variables)

    def total():
        return mean_loss(keras.losses.mean_squared_error, y, model1(x)) + (
            mean_loss(keras.losses.mean_squared_error, y, model2(x))
        )

    want_loss, want_weights = reference.sgd_step(total, variables, LEARNING_RATE)
    before = [ops.convert_to_numpy(v) for v in shared.trainable_variables]
    logs = joint_sgd_step({"model1": model1, "model2": model2}, x, y, loss="mse")

    np.testing.assert_allclose(logs["loss"], want_loss, rtol=1e-5)
    assert_weights((model1, model2), want_weights)
    # The hand-written loop of the document concatenates the two variable
    # lists, so the shared kernel appears twice and gets its step twice.
    _, grads = reference.value_and_grad(total, variables)
    shared_index = [id(v) for v in variables].index(id(shared.kernel))
    doubled = before[0] - 2 * LEARNING_RATE * grads[shared_index]
    assert not np.allclose(ops.convert_to_numpy(shared.kernel), doubled, atol=ATOL)


def test_documents_literal_shared_layer_gives_a_clear_error():
    shared = keras.layers.Dense(32, activation="relu")
    model1 = keras.Sequential(
        [keras.layers.Dense(64, activation="relu"), shared, keras.layers.Dense(1)],
        name="model1",
    )
    model2 = keras.Sequential(
        [keras.layers.Dense(16, activation="relu"), shared, keras.layers.Dense(1)],
        name="model2",
    )
    joint = jk.JointModel({"model1": model1, "model2": model2})
    joint.compile(optimizer="sgd", loss="mse")
    x, y = data()
    with pytest.raises(ValueError, match="model2"):
        joint.fit(x, y, epochs=1, verbose=0)
