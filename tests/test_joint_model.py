"""Behaviour of `JointModel` through `compile()`/`fit()`/`evaluate()`/`predict()`."""

import warnings

import keras
import numpy as np
import pytest
from keras import ops

import joint_keras as jk
from tests import reference
from tests.conftest import BACKEND


def make_model(name, hidden=8, inputs=4, outputs=1, **dense_kwargs):
    return keras.Sequential(
        [
            keras.Input((inputs,)),
            keras.layers.Dense(hidden, activation="tanh", **dense_kwargs),
            keras.layers.Dense(outputs),
        ],
        name=name,
    )


def make_data(n=64, inputs=4, outputs=1, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, inputs)).astype("float32")
    y = rng.normal(size=(n, outputs)).astype("float32")
    return x, y


def numpy_weights(model):
    return [np.array(ops.convert_to_numpy(v)) for v in model.weights]


def changed(before, model):
    return any(not np.allclose(b, a) for b, a in zip(before, numpy_weights(model)))


def per_sample(loss_fn, y, y_pred):
    return ops.convert_to_numpy(loss_fn(y, y_pred))


def test_submodels_are_the_same_objects_and_trained_in_place():
    m1, m2 = make_model("a"), make_model("b")
    joint = jk.JointModel({"model1": m1, "model2": m2})
    assert joint.submodels["model1"] is m1
    assert list(joint.submodels) == ["model1", "model2"]
    with pytest.raises(TypeError):
        joint.submodels["model3"] = m1  # read-only view
    before = numpy_weights(m1)
    joint.compile(optimizer="sgd", loss="mse")
    joint.fit(*make_data(), epochs=1, verbose=0)
    assert changed(before, m1)


def test_list_of_models_is_named_by_model_name():
    joint = jk.JointModel([make_model("left"), make_model("right")])
    assert list(joint.submodels) == ["left", "right"]


def test_logs_carry_per_submodel_losses_metrics_and_val_twins():
    joint = jk.JointModel({"model1": make_model("a"), "model2": make_model("b")})
    joint.compile(
        optimizer="adam",
        loss={"model1": "mse", "model2": "mae"},
        loss_weights={"model1": 0.7, "model2": 0.3},
        metrics={"model1": ["mae"], "model2": ["mse"]},
    )
    history = joint.fit(
        *make_data(), epochs=2, batch_size=16, validation_split=0.25, verbose=0
    )
    expected = {"loss", "model1_loss", "model1_mae", "model2_loss", "model2_mse"}
    assert set(history.history) == expected | {f"val_{k}" for k in expected}
    assert all(len(v) == 2 for v in history.history.values())


def test_evaluate_matches_hand_computed_losses_and_metrics():
    m1, m2 = make_model("a"), make_model("b")
    joint = jk.JointModel({"model1": m1, "model2": m2})
    joint.compile(
        optimizer="sgd",
        loss={"model1": "mse", "model2": "mae"},
        loss_weights={"model1": 0.7, "model2": 0.3},
        metrics={"model1": ["mae"], "model2": ["mse"]},
    )
    x, y = make_data()
    logs = joint.evaluate(x, y, batch_size=64, verbose=0, return_dict=True)

    p1, p2 = ops.convert_to_numpy(m1(x)), ops.convert_to_numpy(m2(x))
    mse1 = np.mean((p1 - y) ** 2)
    mae2 = np.mean(np.abs(p2 - y))
    np.testing.assert_allclose(logs["model1_loss"], mse1, rtol=1e-5)
    np.testing.assert_allclose(logs["model2_loss"], mae2, rtol=1e-5)
    np.testing.assert_allclose(logs["loss"], 0.7 * mse1 + 0.3 * mae2, rtol=1e-5)
    np.testing.assert_allclose(logs["model1_mae"], np.mean(np.abs(p1 - y)), rtol=1e-5)
    np.testing.assert_allclose(logs["model2_mse"], np.mean((p2 - y) ** 2), rtol=1e-5)


def test_one_loss_applies_to_every_submodel_and_weights_default_to_one():
    m1, m2 = make_model("a"), make_model("b")
    joint = jk.JointModel({"model1": m1, "model2": m2})
    joint.compile(optimizer="sgd", loss="mse")
    assert joint.loss_weights == {"model1": 1.0, "model2": 1.0}
    x, y = make_data()
    logs = joint.evaluate(x, y, batch_size=64, verbose=0, return_dict=True)
    want = np.mean((ops.convert_to_numpy(m1(x)) - y) ** 2) + np.mean(
        (ops.convert_to_numpy(m2(x)) - y) ** 2
    )
    np.testing.assert_allclose(logs["loss"], want, rtol=1e-5)


def test_dict_targets_and_absent_submodel_gets_no_loss_and_no_update():
    m1, m2 = make_model("a"), make_model("b")
    joint = jk.JointModel({"model1": m1, "model2": m2})
    joint.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    x, y = make_data()
    before2 = numpy_weights(m2)
    with warnings.catch_warnings():
        # TensorFlow and torch warn that model2 has no gradient.
        warnings.simplefilter("ignore", UserWarning)
        history = joint.fit(x, {"model1": y}, epochs=1, verbose=0)
    assert set(history.history) == {"loss", "model1_loss", "model1_mae"}
    assert not changed(before2, m2)


def test_dict_targets_per_submodel_are_routed_by_name():
    m1, m2 = make_model("a"), make_model("b", outputs=3)
    joint = jk.JointModel({"model1": m1, "model2": m2})
    joint.compile(optimizer="sgd", loss="mse")
    x, y1 = make_data()
    _, y2 = make_data(outputs=3, seed=1)
    logs = joint.evaluate(
        x, {"model1": y1, "model2": y2}, batch_size=64, verbose=0, return_dict=True
    )
    np.testing.assert_allclose(
        logs["model2_loss"],
        np.mean((ops.convert_to_numpy(m2(x)) - y2) ** 2),
        rtol=1e-5,
    )


def test_dict_input_keyed_by_submodel_name_routes_each_entry():
    m1 = make_model("a", inputs=4)
    m2 = make_model("b", inputs=6)
    joint = jk.JointModel({"model1": m1, "model2": m2})
    joint.compile(optimizer="sgd", loss="mse")
    x1, y = make_data(inputs=4)
    x2, _ = make_data(inputs=6, seed=3)
    joint.fit({"model1": x1, "model2": x2}, y, epochs=1, verbose=0)
    predictions = joint.predict({"model1": x1, "model2": x2}, verbose=0)
    np.testing.assert_allclose(
        predictions["model2"], ops.convert_to_numpy(m2(x2)), rtol=1e-5, atol=1e-6
    )


def test_predict_returns_a_dict_of_arrays_per_submodel_in_order():
    m1, m2 = make_model("a"), make_model("b", outputs=2)
    joint = jk.JointModel({"zeta": m1, "alpha": m2})
    x, _ = make_data(n=10)
    predictions = joint.predict(x, batch_size=4, verbose=0)
    assert list(predictions) == ["zeta", "alpha"]
    assert list(joint.predict_on_batch(x)) == ["zeta", "alpha"]
    assert isinstance(predictions["zeta"], np.ndarray)
    assert predictions["alpha"].shape == (10, 2)
    np.testing.assert_allclose(
        predictions["zeta"], m1.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )


def test_sample_weight_array_applies_to_every_submodel_as_in_keras():
    m1, m2 = make_model("a"), make_model("b")
    joint = jk.JointModel({"model1": m1, "model2": m2})
    joint.compile(optimizer="sgd", loss="mse")
    x, y = make_data()
    w = np.linspace(0.0, 2.0, len(x)).astype("float32")
    logs = joint.evaluate(
        x, y, sample_weight=w, batch_size=64, verbose=0, return_dict=True
    )
    for name, model in (("model1", m1), ("model2", m2)):
        per = per_sample(keras.losses.mean_squared_error, y, model(x))
        # Keras's "sum_over_batch_size": weighted sum over the batch size.
        np.testing.assert_allclose(
            logs[f"{name}_loss"], np.sum(w * per) / len(x), rtol=1e-5
        )


def test_sample_weight_dict_weights_each_submodel_separately():
    m1, m2 = make_model("a"), make_model("b")
    joint = jk.JointModel({"model1": m1, "model2": m2})
    joint.compile(optimizer="sgd", loss="mse")
    x, y = make_data()
    w1 = np.linspace(0.0, 1.0, len(x)).astype("float32")
    dataset_like = (x, {"model1": y, "model2": y}, {"model1": w1})
    logs = joint.test_on_batch(*dataset_like, return_dict=True)
    per1 = per_sample(keras.losses.mean_squared_error, y, m1(x))
    per2 = per_sample(keras.losses.mean_squared_error, y, m2(x))
    np.testing.assert_allclose(
        logs["model1_loss"], np.sum(w1 * per1) / len(x), rtol=1e-5
    )
    np.testing.assert_allclose(logs["model2_loss"], np.mean(per2), rtol=1e-5)


def test_regularization_losses_of_submodels_are_added_to_the_total():
    reg = keras.regularizers.L2(0.1)
    m1 = make_model("a", kernel_regularizer=reg)
    m2 = make_model("b")
    joint = jk.JointModel({"model1": m1, "model2": m2})
    joint.compile(
        optimizer="sgd", loss="mse", loss_weights={"model1": 0.5, "model2": 2.0}
    )
    x, y = make_data()
    logs = joint.evaluate(x, y, batch_size=64, verbose=0, return_dict=True)
    kernel = ops.convert_to_numpy(m1.layers[0].kernel)
    penalty = 0.1 * np.sum(kernel**2)
    want = 0.5 * logs["model1_loss"] + 2.0 * logs["model2_loss"] + penalty
    np.testing.assert_allclose(logs["loss"], want, rtol=1e-5)


def test_shared_layer_regularization_is_counted_once():
    shared = keras.layers.Dense(3, kernel_regularizer=keras.regularizers.L2(1.0))
    m1 = keras.Sequential([keras.Input((4,)), shared, keras.layers.Dense(1)], name="a")
    m2 = keras.Sequential([keras.Input((4,)), shared, keras.layers.Dense(1)], name="b")
    joint = jk.JointModel({"model1": m1, "model2": m2})
    joint.compile(optimizer="sgd", loss="mse")
    x, y = make_data()
    logs = joint.evaluate(x, y, batch_size=64, verbose=0, return_dict=True)
    penalty = np.sum(ops.convert_to_numpy(shared.kernel) ** 2)
    want = logs["model1_loss"] + logs["model2_loss"] + penalty
    np.testing.assert_allclose(logs["loss"], want, rtol=1e-5)


def test_frozen_submodel_gets_no_update():
    m1, m2 = make_model("a"), make_model("b")
    m2.trainable = False
    joint = jk.JointModel({"model1": m1, "model2": m2})
    joint.compile(optimizer="sgd", loss="mse")
    before1, before2 = numpy_weights(m1), numpy_weights(m2)
    history = joint.fit(*make_data(), epochs=2, verbose=0)
    assert "model2_loss" in history.history
    assert changed(before1, m1)
    assert not changed(before2, m2)


def test_submodel_without_trainable_variables_is_fine():
    m1 = make_model("a")
    m2 = keras.Sequential(
        [keras.Input((4,)), keras.layers.Activation("tanh")], name="b"
    )
    assert not m2.trainable_variables
    joint = jk.JointModel({"model1": m1, "model2": m2})
    joint.compile(optimizer="sgd", loss="mse")
    x, y = make_data()
    history = joint.fit(x, {"model1": y, "model2": np.tanh(x)}, epochs=1, verbose=0)
    np.testing.assert_allclose(history.history["model2_loss"][0], 0.0, atol=1e-6)


def one_step_weights(**compile_kwargs):
    keras.utils.set_random_seed(7)
    m1, m2 = make_model("a"), make_model("b")
    joint = jk.JointModel({"model1": m1, "model2": m2})
    joint.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse", **compile_kwargs)
    x, y = make_data()
    joint.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    return reference.weights_of(m1, m2)


@pytest.mark.parametrize(
    "compile_kwargs",
    [
        {"run_eagerly": True},
        {"jit_compile": True},
        {"steps_per_execution": 4},
    ],
    ids=["run_eagerly", "jit_compile", "steps_per_execution"],
)
def test_compile_options_give_the_same_training(compile_kwargs):
    if BACKEND == "torch" and "steps_per_execution" in compile_kwargs:
        pytest.skip("Keras does not support steps_per_execution on torch.")
    base = one_step_weights()
    other = one_step_weights(**compile_kwargs)
    for a, b in zip(base, other):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


class CountingJointModel(jk.JointModel):
    calls = 0

    def compute_loss(self, *args, **kwargs):
        CountingJointModel.calls += 1
        return super().compute_loss(*args, **kwargs)


@pytest.mark.parametrize("run_eagerly", [False, True])
def test_step_is_compiled_unless_run_eagerly(run_eagerly):
    if BACKEND == "torch" and not run_eagerly:
        pytest.skip("Keras runs torch steps eagerly unless jit_compile=True.")
    CountingJointModel.calls = 0
    joint = CountingJointModel({"model1": make_model("a"), "model2": make_model("b")})
    joint.compile(optimizer="sgd", loss="mse", run_eagerly=run_eagerly)
    joint.fit(*make_data(), batch_size=4, epochs=1, verbose=0)  # 16 steps
    if run_eagerly:
        assert CountingJointModel.calls >= 16
    else:
        # Python runs only while tracing (symbolic build + trace).
        assert CountingJointModel.calls <= 3


def test_tf_data_dataset_input():
    import tensorflow as tf

    m1, m2 = make_model("a"), make_model("b")
    joint = jk.JointModel({"model1": m1, "model2": m2})
    joint.compile(optimizer="sgd", loss="mse", metrics={"model2": ["mae"]})
    x, y = make_data()
    ds = tf.data.Dataset.from_tensor_slices((x, {"model1": y, "model2": y})).batch(16)
    history = joint.fit(ds, epochs=2, validation_data=ds, shuffle=False, verbose=0)
    assert {"model1_loss", "model2_mae", "val_model2_mae"} <= set(history.history)
    logs = joint.evaluate(ds, verbose=0, return_dict=True)
    want = np.mean((ops.convert_to_numpy(m2(x)) - y) ** 2)
    np.testing.assert_allclose(logs["model2_loss"], want, rtol=1e-5)


class Batches(keras.utils.PyDataset):
    def __init__(self, x, y, batch_size):
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self):
        return len(self.x) // self.batch_size

    def __getitem__(self, i):
        s = slice(i * self.batch_size, (i + 1) * self.batch_size)
        return self.x[s], {"model1": self.y[s], "model2": self.y[s]}


def test_py_dataset_input():
    m1, m2 = make_model("a"), make_model("b")
    joint = jk.JointModel({"model1": m1, "model2": m2})
    joint.compile(optimizer="sgd", loss="mse")
    x, y = make_data()
    before = numpy_weights(m1)
    history = joint.fit(Batches(x, y, 16), epochs=1, verbose=0)
    assert changed(before, m1)
    assert {"loss", "model1_loss", "model2_loss"} == set(history.history)


def test_train_step_matches_hand_gradient_with_adam_and_weights():
    # One Adam step: the first Adam update is lr * sign-like g/(|g|+eps),
    # so this checks the gradient direction of every variable end to end.
    m1, m2 = make_model("a"), make_model("b")
    x, y = make_data()
    variables = reference.unique_variables(m1, m2)

    def total():
        l1 = ops.mean(keras.losses.mean_squared_error(y, m1(x)))
        l2 = ops.mean(keras.losses.mean_absolute_error(y, m2(x)))
        return 0.25 * l1 + 2.0 * l2

    loss, grads = reference.value_and_grad(total, variables)
    before = [ops.convert_to_numpy(v) for v in variables]
    joint = jk.JointModel({"model1": m1, "model2": m2})
    opt = keras.optimizers.Adam(learning_rate=0.01, epsilon=1e-7)
    joint.compile(
        optimizer=opt,
        loss={"model1": "mse", "model2": "mae"},
        loss_weights=[0.25, 2.0],
    )
    logs = joint.train_on_batch(x, y, return_dict=True)
    np.testing.assert_allclose(logs["loss"], loss, rtol=1e-5)
    for b, g, v in zip(before, grads, variables):
        # Keras Adam, step 1: m = 0.1 g, v = 0.001 g^2, bias-corrected.
        alpha = 0.01 * np.sqrt(1 - 0.999) / (1 - 0.9)
        want = b - alpha * (0.1 * g) / (np.sqrt(0.001 * g**2) + 1e-7)
        np.testing.assert_allclose(ops.convert_to_numpy(v), want, rtol=1e-4, atol=1e-6)


def test_a_frozen_submodel_runs_in_inference_mode():
    teacher = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(16),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(3, activation="softmax"),
        ],
        name="teacher",
    )
    teacher.trainable = False
    student = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3, activation="softmax")], name="student"
    )
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    want = ops.convert_to_numpy(teacher(x, training=False))

    def gap(y_true, y_pred):
        return ops.mean(ops.abs(y_pred["teacher"] - ops.convert_to_tensor(want)))

    joint = jk.JointModel({"teacher": teacher, "student": student})
    joint.compile(
        optimizer="sgd",
        loss={"student": "sparse_categorical_crossentropy"},
        joint_losses=[jk.JointLoss(gap, weight=0.0)],
    )
    history = joint.fit(
        x, {"student": np.zeros(64, "int32")}, batch_size=64, verbose=0, shuffle=False
    )
    assert history.history["gap_loss"][0] < 1e-6


def test_each_metric_and_state_variable_is_listed_once():
    # A variable listed twice would be donated twice in a JAX step.
    joint = jk.JointModel({"model1": make_model("a"), "model2": make_model("b")})
    joint.compile(optimizer="adam", loss="mse", metrics=["mae"], weighting="dwa")
    joint.fit(*make_data(), epochs=1, verbose=0)
    names = [m.name for m in joint.metrics]
    assert len(names) == len(set(names)), names
    state = (
        joint.trainable_variables
        + joint.non_trainable_variables
        + list(joint.optimizer.variables)
        + joint.metrics_variables
    )
    assert len({id(v) for v in state}) == len(state)
