"""Joint loss terms over several submodels' outputs, checked by hand."""

import keras
import numpy as np
import pytest
from keras import ops

import joint_keras as jk
from tests import reference


def mlp(name):
    return keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(6, activation="tanh"),
            keras.layers.Dense(2),
        ],
        name=name,
    )


def data(n=32):
    rng = np.random.default_rng(0)
    return (
        rng.normal(size=(n, 4)).astype("float32"),
        rng.normal(size=(n, 2)).astype("float32"),
    )


@keras.saving.register_keras_serializable(package="joint_keras_tests")
def agreement(y_true, y_pred):
    return ops.mean(ops.square(y_pred["a"] - y_pred["b"]))


def test_joint_loss_step_matches_hand_gradient():
    a, b = mlp("a"), mlp("b")
    x, y = data()
    variables = reference.unique_variables(a, b)

    def total():
        pa, pb = a(x), b(x)
        supervised = ops.mean(keras.losses.mean_squared_error(y, pa)) + 2.0 * ops.mean(
            keras.losses.mean_squared_error(y, pb)
        )
        return supervised + 0.3 * ops.mean(ops.square(pa - pb))

    want_loss, want_weights = reference.sgd_step(total, variables, 0.1)
    joint = jk.JointModel({"a": a, "b": b})
    joint.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss="mse",
        loss_weights={"a": 1.0, "b": 2.0},
        joint_losses=[jk.JointLoss(agreement, weight=0.3)],
    )
    logs = joint.train_on_batch(x, y, return_dict=True)
    np.testing.assert_allclose(logs["loss"], want_loss, rtol=1e-5)
    np.testing.assert_allclose(
        logs["a_loss"] + 2.0 * logs["b_loss"] + 0.3 * logs["agreement_loss"],
        want_loss,
        rtol=1e-5,
    )
    for got, want in zip(reference.weights_of(a, b), want_weights):
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_joint_losses_alone_train_without_targets():
    a, b = mlp("a"), mlp("b")
    joint = jk.JointModel({"a": a, "b": b})
    joint.compile(optimizer="sgd", joint_losses=[agreement])
    x, _ = data()
    history = joint.fit(x, None, epochs=2, verbose=0)
    assert set(history.history) == {"loss", "agreement_loss"}
    assert history.history["loss"][1] < history.history["loss"][0]


class WithExtraTerm(jk.JointModel):
    def compute_joint_loss(self, x, y, y_pred, sample_weight):
        return 0.25 * ops.mean(ops.abs(y_pred["a"] + y_pred["b"]))


def test_compute_joint_loss_override_is_added_to_the_total():
    a, b = mlp("a"), mlp("b")
    x, y = data()
    variables = reference.unique_variables(a, b)

    def total():
        pa, pb = a(x), b(x)
        return (
            ops.mean(keras.losses.mean_squared_error(y, pa))
            + ops.mean(keras.losses.mean_squared_error(y, pb))
            + 0.25 * ops.mean(ops.abs(pa + pb))
        )

    want_loss, want_weights = reference.sgd_step(total, variables, 0.1)
    joint = WithExtraTerm({"a": a, "b": b})
    joint.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    logs = joint.train_on_batch(x, y, return_dict=True)
    np.testing.assert_allclose(logs["loss"], want_loss, rtol=1e-5)
    for got, want in zip(reference.weights_of(a, b), want_weights):
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_joint_losses_survive_save_and_load(tmp_path):
    joint = jk.JointModel({"a": mlp("a"), "b": mlp("b")})
    joint.compile(
        optimizer="sgd", loss="mse", joint_losses=[jk.JointLoss(agreement, 0.3)]
    )
    x, y = data()
    joint.fit(x, y, epochs=1, verbose=0)
    joint.save(tmp_path / "j.keras")
    loaded = keras.models.load_model(tmp_path / "j.keras")
    want = joint.evaluate(x, y, verbose=0, return_dict=True)
    got = loaded.evaluate(x, y, verbose=0, return_dict=True)
    assert set(got) == {"loss", "a_loss", "b_loss", "agreement_loss"}
    np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-6)


def test_joint_loss_errors():
    joint = jk.JointModel({"a": mlp("a"), "b": mlp("b")})
    with pytest.raises(TypeError, match="callable"):
        jk.JointLoss("not callable")
    with pytest.raises(TypeError, match=r"`joint_losses\[0\]`"):
        joint.compile(joint_losses=[3])
    with pytest.raises(ValueError, match="non-negative and finite.*'agreement'"):
        joint.compile(joint_losses=[jk.JointLoss(agreement, weight=-1.0)])
    with pytest.raises(ValueError, match="'a' is taken already"):
        joint.compile(joint_losses=[jk.JointLoss(agreement, name="a")])
    with pytest.raises(ValueError, match="'agreement' is taken already"):
        joint.compile(joint_losses=[agreement, agreement])


def per_sample_agreement(y_true, y_pred):
    # One value per sample, as a Keras loss function returns.
    return ops.mean(ops.square(y_pred["a"] - y_pred["b"]), axis=-1)


@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "sample_weight"])
def test_per_sample_joint_loss_is_reduced_like_a_keras_loss(weighted):
    a, b = mlp("a"), mlp("b")
    x, y = data(n=64)
    w = np.linspace(0.0, 2.0, 64).astype("float32") if weighted else None
    variables = reference.unique_variables(a, b)

    def total():
        pa, pb = a(x), b(x)
        per_sample = ops.mean(ops.square(pa - pb), axis=-1)
        weights = 1.0 if w is None else ops.convert_to_tensor(w)
        # "sum_over_batch_size": the weighted sum over the batch size.
        agreement_term = ops.sum(per_sample * weights) / 64
        supervised = ops.sum(keras.losses.mean_squared_error(y, pa) * weights) / 64
        return supervised + 0.3 * agreement_term

    want_loss, want_weights = reference.sgd_step(total, variables, 0.1)
    joint = jk.JointModel({"a": a, "b": b})
    joint.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss={"a": "mse"},
        joint_losses=[jk.JointLoss(per_sample_agreement, weight=0.3, name="agree")],
    )
    logs = joint.train_on_batch(x, {"a": y}, sample_weight=w, return_dict=True)
    np.testing.assert_allclose(logs["loss"], want_loss, rtol=1e-5)
    for got, want in zip(reference.weights_of(a, b), want_weights):
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_a_joint_loss_gets_its_own_entry_of_a_sample_weight_dict():
    a, b = mlp("a"), mlp("b")
    x, _ = data(n=16)
    w = np.arange(16).astype("float32")
    joint = jk.JointModel({"a": a, "b": b})
    joint.compile(joint_losses=[jk.JointLoss(per_sample_agreement, name="agree")])
    logs = joint.test_on_batch(x, None, {"agree": w}, return_dict=True)
    per_sample = np.mean(
        (ops.convert_to_numpy(a(x)) - ops.convert_to_numpy(b(x))) ** 2, axis=-1
    )
    np.testing.assert_allclose(logs["agree_loss"], np.sum(w * per_sample) / 16,
                               rtol=1e-5)  # fmt: skip


@pytest.mark.parametrize("name", ["val", "val_a", "a/b"])
def test_joint_loss_names_that_would_collide_in_the_logs_are_refused(name):
    joint = jk.JointModel({"a": mlp("a"), "b": mlp("b")})
    with pytest.raises(ValueError, match="name"):
        joint.compile(joint_losses=[jk.JointLoss(agreement, name=name)])


class WithComputeLoss(jk.JointModel):
    """A user's `compute_loss` override, as `keras.Model` documents it."""

    def compute_loss(self, x, y, y_pred, sample_weight, training=True):
        loss = super().compute_loss(x, y, y_pred, sample_weight, training)
        return loss + 0.5 * ops.mean(ops.square(y_pred["a"]))


def test_a_compute_loss_override_is_honoured():
    a, b = mlp("a"), mlp("b")
    x, y = data()
    variables = reference.unique_variables(a, b)

    def total():
        pa, pb = a(x), b(x)
        mse = keras.losses.mean_squared_error
        return ops.mean(mse(y, pa)) + ops.mean(mse(y, pb)) + 0.5 * ops.mean(pa**2)

    want_loss, want_weights = reference.sgd_step(total, variables, 0.1)
    joint = WithComputeLoss({"a": a, "b": b})
    joint.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    logs = joint.train_on_batch(x, y, return_dict=True)
    np.testing.assert_allclose(logs["loss"], want_loss, rtol=1e-5)
    for got, want in zip(reference.weights_of(a, b), want_weights):
        np.testing.assert_allclose(got, want, atol=1e-6)
    # The same in a routed step (b has no target: it is left alone).
    before_b = reference.weights_of(b)
    joint.train_on_batch(x, {"a": y})
    for got, want in zip(reference.weights_of(b), before_b):
        np.testing.assert_array_equal(got, want)


def test_an_input_gradient_beside_a_compiled_loss_matches_its_closed_form():
    # A linear critic `x @ w`: its input gradient is `w` on every row, so the
    # penalty `mean((|grad| - 1)^2)` is `(|w| - 1)^2`. Beside a compiled
    # loss, Keras first builds the losses under PyTorch's `no_grad`.
    w = np.array([[3.0], [4.0]], "float32")
    critic = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    critic.set_weights([w, np.zeros(1, "float32")])

    def penalty(y_true, y_pred, context):
        grad = context.input_gradient(
            context.submodels["critic"], context.inputs["critic"]
        )
        return keras.ops.mean(
            (keras.ops.sqrt(keras.ops.sum(grad**2, axis=-1)) - 1.0) ** 2
        )

    model = jk.JointModel({"critic": critic})
    model.compile(
        optimizer=keras.optimizers.SGD(0.0),
        loss={"critic": "mse"},
        joint_losses=[jk.JointLoss(penalty, name="penalty", with_context=True)],
    )
    x = np.random.default_rng(0).normal(size=(8, 2)).astype("float32")
    history = model.fit(x, np.zeros((8, 1), "float32"), batch_size=8, verbose=0)
    np.testing.assert_allclose(
        history.history["penalty_loss"][0], (5.0 - 1.0) ** 2, rtol=1e-6
    )
