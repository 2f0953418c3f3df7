"""Keras habits (lists in submodel order, multi-output submodels,
`CallbackList`, NumPy scalars) mean what a Keras user expects, or fail with
a message that says why; never silently something else."""

import keras
import numpy as np
import pytest
from keras import ops

import joint_keras as jk
from tests import reference
from tests.models import mlp


def data(n=16, seed=0, outputs=2, inputs=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, inputs)).astype("float32")
    return x, rng.normal(size=(n, outputs)).astype("float32")


def mean(values):
    return float(np.mean(values))


def test_a_loss_list_maps_to_submodels_in_order():
    a, b = mlp("a"), mlp("b")
    x, y = data()
    joint = jk.JointModel({"a": a, "b": b})
    joint.compile(optimizer="sgd", loss=["mse", "mae"])
    logs = joint.evaluate(x, y, verbose=0, return_dict=True)
    pa, pb = (ops.convert_to_numpy(m(x)) for m in (a, b))
    np.testing.assert_allclose(logs["a_loss"], mean((pa - y) ** 2), rtol=1e-5)
    np.testing.assert_allclose(logs["b_loss"], mean(np.abs(pb - y)), rtol=1e-5)
    with pytest.raises(ValueError, match="one entry per submodel"):
        joint.compile(loss=["mse", "mae", "mse"])


def test_x_y_and_sample_weight_lists_map_to_submodels_in_order():
    a, b = mlp("a"), mlp("b", inputs=5)
    xa, ya = data(inputs=3)
    xb, yb = data(inputs=5, seed=1)
    w = np.linspace(0.0, 2.0, 16).astype("float32")
    joint = jk.JointModel({"a": a, "b": b})
    joint.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    variables = reference.unique_variables(a, b)

    def total():
        la = keras.losses.mean_squared_error(ya, a(xa))
        lb = keras.losses.mean_squared_error(yb, b(xb))
        return ops.mean(la) + ops.sum(lb * ops.convert_to_tensor(w)) / 16

    want_loss, want = reference.sgd_step(total, variables, 0.1)
    logs = joint.train_on_batch([xa, xb], [ya, yb], [None, w], return_dict=True)
    np.testing.assert_allclose(logs["loss"], want_loss, rtol=1e-5)
    for got, expected in zip(reference.weights_of(a, b), want):
        np.testing.assert_allclose(got, expected, atol=1e-6)
    predictions = joint.predict([xa, xb], verbose=0)
    np.testing.assert_allclose(predictions["b"], ops.convert_to_numpy(b(xb)), atol=1e-5)
    with pytest.raises(ValueError, match="one entry per submodel"):
        joint.predict([xa, xb, xa], verbose=0)


def test_metric_lists_of_lists_map_in_order_and_flat_lists_apply_to_all():
    a, b = mlp("a"), mlp("b")
    x, y = data()
    joint = jk.JointModel({"a": a, "b": b})
    joint.compile(loss="mse", metrics=[["mae"], ["mse"]])
    logs = joint.evaluate(x, y, verbose=0, return_dict=True)
    assert {"a_mae", "b_mse"} <= set(logs) and "a_mse" not in logs
    joint.compile(loss="mse", metrics=["mae", "mse"])
    logs = joint.evaluate(x, y, verbose=0, return_dict=True)
    assert {"a_mae", "a_mse", "b_mae", "b_mse"} <= set(logs)


def test_a_loss_weights_list_entry_for_a_submodel_without_loss_raises():
    joint = jk.JointModel({"a": mlp("a"), "b": mlp("b")})
    with pytest.raises(ValueError, match="gives a weight to submodel 'b'"):
        joint.compile(loss={"a": "mse"}, loss_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="gives a weight to submodel 'b'"):
        joint.compile(loss={"a": "mse"}, loss_weights={"a": 1.0, "b": 2.0})


def two_outputs():
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(4, activation="tanh")(inputs)
    o1 = keras.layers.Dense(2, name="o1")(hidden)
    o2 = keras.layers.Dense(1, name="o2")(hidden)
    return keras.Model(inputs, {"o1": o1, "o2": o2}, name="two")


def test_multi_output_submodels_take_nested_losses_weights_metrics_targets():
    two, other = two_outputs(), mlp("other")
    x, y1 = data()
    _, y2 = data(outputs=1, seed=1)
    _, y3 = data(seed=2)
    # The same multi-output model compiled on its own, as Keras does it.
    two.compile(
        loss={"o1": "mse", "o2": "mae"},
        loss_weights={"o1": 1.0, "o2": 0.5},
        metrics={"o1": ["mae"]},
    )
    alone = two.evaluate(x, {"o1": y1, "o2": y2}, verbose=0, return_dict=True)
    joint = jk.JointModel({"two": two, "other": other})
    joint.compile(
        optimizer="sgd",
        loss={"two": {"o1": "mse", "o2": "mae"}, "other": "mse"},
        loss_weights={"two": {"o1": 1.0, "o2": 0.5}, "other": 2.0},
        metrics={"two": {"o1": ["mae"]}},
    )
    y = {"two": {"o1": y1, "o2": y2}, "other": y3}
    logs = joint.evaluate(x, y, verbose=0, return_dict=True)
    other_loss = mean((ops.convert_to_numpy(other(x)) - y3) ** 2)
    np.testing.assert_allclose(logs["two_loss"], alone["loss"], rtol=1e-5)
    np.testing.assert_allclose(logs["two_o1_loss"], alone["o1_loss"], rtol=1e-5)
    np.testing.assert_allclose(logs["two_o2_loss"], alone["o2_loss"], rtol=1e-5)
    np.testing.assert_allclose(logs["two_o1_mae"], alone["o1_mae"], rtol=1e-5)
    np.testing.assert_allclose(
        logs["loss"], alone["loss"] + 2.0 * other_loss, rtol=1e-5
    )
    history = joint.fit(x, y, epochs=1, verbose=0, validation_data=(x, y))
    assert {"two_o1_loss", "val_two_o2_loss", "val_two_o1_mae"} <= set(history.history)


def test_fit_accepts_a_callback_list():
    joint = jk.JointModel({"a": mlp("a"), "b": mlp("b")})
    joint.compile(optimizer="sgd", loss="mse", weighting="dwa")
    seen = []
    record = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: seen.append(e))
    callbacks = keras.callbacks.CallbackList([record], model=joint, add_history=True)
    joint.fit(*data(), epochs=2, verbose=0, callbacks=callbacks)
    assert seen == [0, 1]


@pytest.mark.parametrize("weight", [np.float32(0.5), np.int64(1), np.float64(2.0)])
def test_numpy_scalar_weights_are_accepted(weight):
    joint = jk.JointModel({"a": mlp("a"), "b": mlp("b")})
    joint.compile(loss="mse", loss_weights={"a": weight, "b": 1.0})
    assert joint.loss_weights["a"] == pytest.approx(float(weight))
    term = jk.JointLoss(lambda t, p: ops.mean(p["a"]), weight=weight, name="m")
    joint.compile(loss="mse", joint_losses=[term])
    assert joint.task_weights["m"] == pytest.approx(float(weight))


def test_clear_messages_for_common_mistakes():
    a, b = mlp("a"), mlp("b")
    x, y = data()
    joint = jk.JointModel({"a": a, "b": b})
    joint.compile(optimizer="sgd", loss="mse")
    before = reference.weights_of(a, b)
    with pytest.raises(ValueError, match=r"`y\['b'\]` is None"):
        joint.train_on_batch(x, {"a": y, "b": None})
    with pytest.raises(ValueError, match=r"naming no submodel: \['c'\]"):
        joint.predict({"a": x, "b": x, "c": x}, verbose=0)
    with pytest.raises(ValueError, match=r"`models` of joint loss 'mutual_kl'.*'c'"):
        joint.compile(loss="mse", joint_losses=[jk.losses.MutualKL(["a", "c"])])
    joint.compile(
        optimizer={"a": "sgd", "b": "sgd"},
        loss="mse",
        update_every={"b": lambda step: ops.mod(step, 2)},
    )
    with pytest.raises(TypeError, match="must give a boolean for submodel 'b'"):
        joint.train_on_batch(x, y)
    # A step that raises keeps the weights (on JAX, Keras detaches them).
    for got, want in zip(reference.weights_of(a, b), before):
        np.testing.assert_array_equal(got, want)
