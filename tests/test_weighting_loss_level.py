"""Loss-level weighting strategies and live loss weights, checked against
their formulas and hand-written steps."""

import keras
import numpy as np
import pytest
from keras import ops

import joint_keras as jk
from tests import reference
from tests.models import mlp


def data(n=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype("float32")
    return x, rng.normal(size=(n, 2)).astype("float32")


def mse(y, p):
    return ops.mean(keras.losses.mean_squared_error(y, p))


def test_assigning_the_weights_variable_reweights_the_next_step():
    a, b = mlp("a"), mlp("b")
    x, y = data()
    joint = jk.JointModel({"a": a, "b": b})
    joint.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    assert joint.task_names == ["a", "b"]
    joint.task_weights_variable.assign([0.25, 3.0])
    assert joint.loss_weights == pytest.approx({"a": 0.25, "b": 3.0})
    want_loss, want = reference.sgd_step(
        lambda: 0.25 * mse(y, a(x)) + 3.0 * mse(y, b(x)),
        reference.unique_variables(a, b),
        0.1,
    )
    logs = joint.train_on_batch(x, y, return_dict=True)
    np.testing.assert_allclose(logs["loss"], want_loss, rtol=1e-5)
    for got, w in zip(reference.weights_of(a, b), want):
        np.testing.assert_allclose(got, w, atol=1e-6)


def test_loss_weight_scheduler_changes_weights_during_fit():
    a, b = mlp("a"), mlp("b")
    x, y = data()
    joint = jk.JointModel({"a": a, "b": b})
    joint.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    # Epoch 0 trains only a; epoch 1 only b.
    scheduler = jk.callbacks.LossWeightScheduler(
        lambda epoch, w: {"a": float(epoch == 0), "b": float(epoch == 1)}
    )
    before = reference.weights_of(a, b)
    joint.fit(x, y, batch_size=16, epochs=1, callbacks=[scheduler], verbose=0)
    after_first = reference.weights_of(a, b)
    for w0, w1 in zip(before[4:], after_first[4:]):
        np.testing.assert_array_equal(w0, w1)
    assert not np.allclose(before[0], after_first[0])
    history = joint.fit(
        x, y, batch_size=16, initial_epoch=1, epochs=2, callbacks=[scheduler], verbose=0
    )
    after_second = reference.weights_of(a, b)
    for w1, w2 in zip(after_first[:4], after_second[:4]):
        np.testing.assert_array_equal(w1, w2)
    assert history.history["a_weight"] == [0.0] and history.history["b_weight"] == [1.0]


def test_uncertainty_step_matches_kendall_by_hand():
    a, b = mlp("a"), mlp("b")
    x, y = data()
    joint = jk.JointModel({"a": a, "b": b})
    joint.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss="mse",
        loss_weights={"a": 1.0, "b": 2.0},
        weighting=jk.weighting.Uncertainty(initial_log_variance=0.5),
    )
    s = joint._weighting.log_variances
    variables = reference.unique_variables(a, b) + [s]

    def total():
        la, lb = mse(y, a(x)), mse(y, b(x))
        return 1.0 * (0.5 * ops.exp(-s[0]) * la + 0.5 * s[0]) + 2.0 * (
            0.5 * ops.exp(-s[1]) * lb + 0.5 * s[1]
        )

    want_loss, want = reference.sgd_step(total, variables, 0.1)
    logs = joint.train_on_batch(x, y, return_dict=True)
    np.testing.assert_allclose(logs["loss"], want_loss, rtol=1e-5)
    np.testing.assert_allclose(logs["b_weight"], 2.0 * 0.5 * np.exp(-0.5), rtol=1e-5)
    for got, w in zip(reference.weights_of(a, b) + [ops.convert_to_numpy(s)], want):
        np.testing.assert_allclose(got, w, atol=1e-6)


def test_uncertainty_adam_step_matches_by_hand():
    # Adam's first step is `lr * g / (|g| + eps / sqrt(1 - beta_2))` per
    # entry, and its velocity `(1 - beta_2) * g**2`: a sparse gradient with
    # repeated indices (two gathers of the log-variances) would square the
    # parts of `g` separately.
    a, b = mlp("a"), mlp("b")
    x, y = data()
    joint = jk.JointModel({"a": a, "b": b})
    joint.compile(
        optimizer=keras.optimizers.Adam(0.05),
        loss="mse",
        weighting=jk.weighting.Uncertainty(),
    )
    s = joint._weighting.log_variances
    variables = reference.unique_variables(a, b) + [s]

    def total():
        la, lb = mse(y, a(x)), mse(y, b(x))
        return 0.5 * (ops.exp(-s[0]) * la + s[0] + ops.exp(-s[1]) * lb + s[1])

    _, grads = reference.value_and_grad(total, variables)
    before = [ops.convert_to_numpy(v) for v in variables]
    joint.train_on_batch(x, y)
    eps = 1e-7 / np.sqrt(1 - 0.999)
    for v, w0, g in zip(variables, before, grads):
        want = w0 - 0.05 * g / (np.abs(g) + eps)
        np.testing.assert_allclose(ops.convert_to_numpy(v), want, atol=1e-6)
    velocity = [
        v for v in joint.optimizer.variables if "log_variances_velocity" in v.path
    ]
    np.testing.assert_allclose(
        ops.convert_to_numpy(velocity[0]), 0.001 * grads[-1] ** 2, rtol=1e-5
    )


def test_set_task_weights_checks_weights_as_compile_does():
    joint = jk.JointModel({"a": mlp("a"), "b": mlp("b")})
    joint.compile(optimizer="sgd", loss="mse")
    joint.set_task_weights({"b": np.float32(0.5)})
    assert joint.task_weights == {"a": 1.0, "b": 0.5}
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="non-negative and finite.*'b'"):
            joint.set_task_weights({"b": bad})
    with pytest.raises(TypeError, match="must be numbers"):
        joint.set_task_weights({"b": "1"})
    with pytest.raises(ValueError, match=r"unknown tasks \['c'\]"):
        joint.set_task_weights({"c": 1.0})
    assert joint.task_weights == {"a": 1.0, "b": 0.5}
    scheduler = jk.callbacks.LossWeightScheduler(lambda epoch, w: {"a": -1.0})
    with pytest.raises(ValueError, match="non-negative and finite.*'a'"):
        joint.fit(*data(), epochs=1, callbacks=[scheduler], verbose=0)


def test_compiling_twice_with_one_strategy_keeps_one_set_of_variables(tmp_path):
    strategy = jk.weighting.Uncertainty()
    joint = jk.JointModel({"a": mlp("a"), "b": mlp("b")})
    joint.compile(optimizer="adam", loss="mse", weighting=strategy)
    count = len(joint.variables)
    joint.compile(optimizer="adam", loss="mse", weighting=strategy)
    assert len(joint.variables) == count
    joint.fit(*data(), epochs=1, verbose=0)
    joint.save(tmp_path / "j.keras")
    loaded = keras.models.load_model(tmp_path / "j.keras")
    np.testing.assert_array_equal(
        ops.convert_to_numpy(loaded.weighting.log_variances),
        ops.convert_to_numpy(strategy.log_variances),
    )


def test_compiling_again_replaces_the_strategy_and_its_variables():
    joint = jk.JointModel({"a": mlp("a"), "b": mlp("b")})
    joint.compile(optimizer="adam", loss="mse", weighting="uncertainty")
    assert any("log_variances" in v.path for v in joint.trainable_variables)
    joint.compile(optimizer="adam", loss="mse", weighting="dwa")
    paths = [v.path for v in joint.variables]
    assert not any("log_variances" in p for p in paths)
    assert any("previous_epoch_loss" in p for p in paths)
    assert len(joint.trainable_variables) == 8


def test_dwa_weights_follow_the_epoch_loss_ratios():
    joint = jk.JointModel({"a": mlp("a"), "b": mlp("b")})
    joint.compile(
        optimizer="adam", loss="mse", weighting=jk.weighting.DWA(temperature=2.0)
    )
    x, y = data(n=64)
    history = joint.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
    h = history.history
    assert h["a_weight"][:2] == [1.0, 1.0] and h["b_weight"][:2] == [1.0, 1.0]
    ratio = np.array([h["a_loss"][1] / h["a_loss"][0], h["b_loss"][1] / h["b_loss"][0]])
    want = 2 * np.exp(ratio / 2.0) / np.exp(ratio / 2.0).sum()
    np.testing.assert_allclose([h["a_weight"][2], h["b_weight"][2]], want, rtol=1e-4)


def test_rlw_draws_random_weights_in_training_only():
    joint = jk.JointModel({"a": mlp("a"), "b": mlp("b"), "c": mlp("c")})
    joint.compile(optimizer="sgd", loss="mse", weighting=jk.weighting.RLW(seed=3))
    x, y = data()
    first = joint.train_on_batch(x, y, return_dict=True)
    second = joint.train_on_batch(x, y, return_dict=True)
    w1 = np.array([first[f"{n}_weight"] for n in "abc"])
    w2 = np.array([second[f"{n}_weight"] for n in "abc"])
    np.testing.assert_allclose(w1.sum(), 3.0, rtol=1e-5)
    np.testing.assert_allclose(w2.sum(), 3.0, rtol=1e-5)
    assert not np.allclose(w1, w2) and not np.allclose(w1, 1.0)
    logs = joint.evaluate(x, y, return_dict=True, verbose=0)
    # Evaluation weighs with the compiled weights (1.0) and logs no weights.
    np.testing.assert_allclose(
        logs["loss"], sum(logs[f"{n}_loss"] for n in "abc"), rtol=1e-5
    )
    assert "a_weight" not in logs


@pytest.mark.parametrize(
    "strategy",
    [jk.weighting.Uncertainty(initial_log_variance=0.1), jk.weighting.DWA(1.5)],
    ids=["uncertainty", "dwa"],
)
def test_strategy_state_survives_save_and_resume(tmp_path, strategy):
    def build():
        keras.utils.set_random_seed(5)
        joint = jk.JointModel({"a": mlp("a"), "b": mlp("b")})
        joint.compile(
            optimizer="adam",
            loss="mse",
            weighting=type(strategy).from_config(strategy.get_config()),
        )
        return joint

    x, y = data(n=32)
    straight = build()
    straight.fit(x, y, batch_size=8, epochs=4, shuffle=False, verbose=0)
    first = build()
    first.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    first.save(tmp_path / "j.keras")
    resumed = keras.models.load_model(tmp_path / "j.keras")
    assert type(resumed._weighting) is type(strategy)
    assert resumed._weighting.get_config() == first._weighting.get_config()
    for v1, v2 in zip(first._weighting.weights, resumed._weighting.weights):
        np.testing.assert_array_equal(
            ops.convert_to_numpy(v1), ops.convert_to_numpy(v2)
        )
    resumed.fit(x, y, batch_size=8, initial_epoch=2, epochs=4, shuffle=False, verbose=0)
    for w1, w2 in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(w1, w2, atol=1e-5)


def test_weighting_errors():
    joint = jk.JointModel({"a": mlp("a"), "b": mlp("b")})
    with pytest.raises(ValueError, match="`weighting` must be None"):
        joint.compile(loss="mse", weighting="bogus")
    with pytest.raises(ValueError, match="`temperature` must be positive"):
        jk.weighting.DWA(temperature=0)
    joint.compile(loss="mse")
    scheduler = jk.callbacks.LossWeightScheduler(lambda epoch, w: {"c": 1.0})
    x, y = data()
    with pytest.raises(ValueError, match="unknown tasks \\['c'\\]"):
        joint.fit(x, y, callbacks=[scheduler], verbose=0)


def test_strategy_variables_go_to_the_first_submodel_optimizer():
    joint = jk.JointModel({"a": mlp("a"), "b": mlp("b")})
    joint.compile(
        optimizer={"a": keras.optimizers.SGD(0.1), "b": keras.optimizers.SGD(0.2)},
        loss="mse",
        weighting="uncertainty",
    )
    x, y = data()
    joint.train_on_batch(x, y)
    s = ops.convert_to_numpy(joint._weighting.log_variances)
    assert np.all(s != 0.0)
    a_opt = joint.optimizer.optimizers[0]
    assert any(v is joint._weighting.log_variances for v in a_opt._trainable_variables)
