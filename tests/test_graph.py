"""Submodels that feed each other (`JointModel(..., inputs=...)`): each runs
once per step, checked against hand-written steps."""

import keras
import numpy as np
import pytest
from keras import ops

import joint_keras as jk
from tests import reference


def trunk_and_heads(batch_norm=False):
    layers = [keras.Input((4,)), keras.layers.Dense(6, activation="tanh")]
    if batch_norm:
        layers.append(keras.layers.BatchNormalization())
    trunk = keras.Sequential(layers, name="trunk")
    priority = keras.Sequential([keras.Input((6,)), keras.layers.Dense(1)], name="p")
    dept = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)], name="d")
    return trunk, priority, dept


def data(n=32):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4)).astype("float32")
    return x, {
        "priority": rng.normal(size=(n, 1)).astype("float32"),
        "dept": rng.integers(0, 3, size=(n,)),
    }


GRAPH = {"priority": "trunk", "dept": "trunk"}


def test_a_shared_trunk_runs_once_and_matches_a_hand_step():
    trunk, priority, dept = trunk_and_heads()
    x, y = data()
    variables = reference.unique_variables(trunk, priority, dept)

    def total():
        h = trunk(x)
        mse = ops.mean(keras.losses.mean_squared_error(y["priority"], priority(h)))
        ce = ops.mean(
            keras.losses.sparse_categorical_crossentropy(
                y["dept"], dept(h), from_logits=True
            )
        )
        return mse + 0.2 * ce

    want_loss, want = reference.sgd_step(total, variables, 0.1)
    joint = jk.JointModel({"trunk": trunk, "priority": priority, "dept": dept},
                          inputs=GRAPH)  # fmt: skip
    joint.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss={
            "priority": "mse",
            "dept": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        },
        loss_weights={"priority": 1.0, "dept": 0.2},
    )
    logs = joint.train_on_batch(x, y, return_dict=True)
    np.testing.assert_allclose(logs["loss"], want_loss, rtol=1e-5)
    for got, w in zip(reference.weights_of(trunk, priority, dept), want):
        np.testing.assert_allclose(got, w, atol=1e-6)
    # One call of the trunk per step (counted in an eager step).
    joint.compile(optimizer="sgd", loss={"priority": "mse"}, run_eagerly=True)
    joint.train_on_batch(x, {"priority": y["priority"]})
    calls, dense = [], trunk.layers[0]
    dense_call = dense.call
    dense.call = lambda *a, **k: calls.append(1) or dense_call(*a, **k)
    try:
        joint.train_on_batch(x, {"priority": y["priority"]})
    finally:
        del dense.call
    assert len(calls) == 1
    predictions = joint.predict(x, verbose=0)
    assert list(predictions) == ["trunk", "priority", "dept"]
    np.testing.assert_allclose(
        predictions["dept"], ops.convert_to_numpy(dept(trunk(x))), atol=1e-5
    )


def test_batch_normalization_in_a_shared_submodel_updates_once_per_step():
    trunk, priority, dept = trunk_and_heads(batch_norm=True)
    x, y = data()
    bn = trunk.layers[-1]
    hidden = ops.convert_to_numpy(trunk.layers[0](x))
    want_mean = 0.99 * 0.0 + 0.01 * hidden.mean(axis=0)
    joint = jk.JointModel({"trunk": trunk, "priority": priority, "dept": dept},
                          inputs=GRAPH)  # fmt: skip
    joint.compile(optimizer=keras.optimizers.SGD(0.0), loss={"priority": "mse"})
    joint.train_on_batch(x, {"priority": y["priority"]})
    np.testing.assert_allclose(
        ops.convert_to_numpy(bn.moving_mean), want_mean, rtol=1e-4, atol=1e-6
    )


def test_graph_errors_name_the_problem():
    trunk, priority, dept = trunk_and_heads()
    models = {"trunk": trunk, "priority": priority, "dept": dept}
    with pytest.raises(ValueError, match="names no submodel"):
        jk.JointModel(models, inputs={"priority": "trunc"})
    with pytest.raises(ValueError, match="cycle: 'trunk' -> 'dept' -> 'trunk'"):
        jk.JointModel(models, inputs={"trunk": "dept", "dept": "trunk"})
    with pytest.raises(ValueError, match="keys that name no submodel"):
        jk.JointModel(models, inputs={"head": "trunk"})
    with pytest.raises(TypeError, match=r"`inputs\['dept'\]` must be"):
        jk.JointModel(models, inputs={"dept": 3})
    joint = jk.JointModel(models, inputs={"priority": "trunk", "dept": "priority"})
    with pytest.raises(ValueError, match="Submodel 'dept' could not be called"):
        joint.predict(data()[0], verbose=0)


def test_representation_can_name_a_submodel():
    trunk, priority, dept = trunk_and_heads()
    x, y = data()
    y = {"priority": y["priority"], "dept": y["priority"] * 2.0}
    dept = keras.Sequential([keras.Input((6,)), keras.layers.Dense(1)], name="d")
    h = ops.stop_gradient(trunk(x))
    z = keras.Variable(ops.convert_to_numpy(h), name="z")

    def head_loss(head, target):
        return ops.mean(keras.losses.mean_squared_error(target, head(z)))

    grads = np.stack([
        reference.value_and_grad(lambda m=m, t=t: head_loss(m, t), [z])[1][0].ravel()
        for m, t in ((priority, y["priority"]), (dept, y["dept"]))
    ])  # fmt: skip
    g1, g2 = grads
    w = np.clip((g2 - g1) @ g2 / ((g1 - g2) @ (g1 - g2)), 0, 1)
    combined = ops.convert_to_tensor((w * g1 + (1 - w) * g2).reshape(h.shape))
    _, trunk_grads = reference.value_and_grad(
        lambda: ops.sum(trunk(x) * combined), trunk.trainable_variables
    )
    before = reference.weights_of(trunk)
    joint = jk.JointModel({"trunk": trunk, "priority": priority, "dept": dept},
                          inputs=GRAPH)  # fmt: skip
    joint.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss={"priority": "mse", "dept": "mse"},
        weighting=jk.weighting.MGDA(representation="trunk"),
    )
    joint.train_on_batch(x, y)
    for got, w0, g in zip(reference.weights_of(trunk), before, trunk_grads):
        np.testing.assert_allclose(got, w0 - 0.1 * g, atol=1e-5)


def test_noise_is_fresh_every_step_and_resumes_after_loading(tmp_path):
    gen = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)], name="g")
    joint = jk.JointModel({"gen": gen}, inputs={"gen": jk.Noise((2,), seed=3)})
    ones = np.ones((8, 1), "float32")
    first = joint.predict_on_batch(ones)["gen"]
    second = joint.predict_on_batch(ones)["gen"]
    assert not np.allclose(first, second)
    joint.compile(optimizer="sgd", loss="mse")
    joint.fit(ones, np.zeros((8, 2), "float32"), batch_size=4, epochs=2, verbose=0)
    joint.save(tmp_path / "g.keras")
    loaded = keras.models.load_model(tmp_path / "g.keras")
    np.testing.assert_array_equal(
        loaded.predict_on_batch(ones)["gen"], joint.predict_on_batch(ones)["gen"]
    )


def test_concat_feeds_generated_and_real_samples_on_the_batch_axis():
    gen = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)], name="g")
    disc = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)], name="d")
    joint = jk.JointModel(
        {"gen": gen, "disc": disc},
        inputs={"gen": jk.Noise((2,)), "disc": jk.Concat("gen", jk.INPUT)},
    )
    real = np.random.default_rng(0).normal(size=(5, 3)).astype("float32")
    outputs = joint.predict_on_batch(real)
    assert outputs["gen"].shape == (5, 3) and outputs["disc"].shape == (10, 1)
    np.testing.assert_allclose(
        outputs["disc"][5:], ops.convert_to_numpy(disc(real)), atol=1e-5
    )
