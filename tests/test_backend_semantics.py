"""Backend state handled as Keras does: gradients, BatchNorm, Dropout, metrics.

Run on every backend. These are the places a hand-written step usually goes
wrong: gradients accumulating across steps (PyTorch), non-trainable and
random-seed state not threaded through a stateless step (JAX), and
training/inference modes of BatchNormalization and Dropout.
"""

import keras
import numpy as np
from keras import ops

import joint_keras as jk
from tests import reference


def mlp(name, inputs=4, outputs=1):
    return keras.Sequential(
        [
            keras.Input((inputs,)),
            keras.layers.Dense(8, activation="tanh"),
            keras.layers.Dense(outputs),
        ],
        name=name,
    )


def data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(n, 4)).astype("float32"),
        rng.normal(size=(n, 1)).astype("float32"),
    )


def test_several_steps_match_hand_written_steps():
    # Gradients must not accumulate across steps (PyTorch) and the updated
    # variables must be carried to the next step (JAX).
    shared = keras.layers.Dense(5, activation="tanh")
    m1 = keras.Sequential([keras.Input((4,)), shared, keras.layers.Dense(1)])
    m2 = keras.Sequential([keras.Input((4,)), shared, keras.layers.Dense(1)])
    x, y = data()
    variables = reference.unique_variables(m1, m2)
    start = [ops.convert_to_numpy(v) for v in variables]

    want_losses = []
    for step in range(3):
        xb, yb = x[step * 16 : (step + 1) * 16], y[step * 16 : (step + 1) * 16]

        def total(xb=xb, yb=yb):
            return ops.mean(keras.losses.mean_squared_error(yb, m1(xb))) + 0.5 * (
                ops.mean(keras.losses.mean_absolute_error(yb, m2(xb)))
            )

        loss, new_values = reference.sgd_step(total, variables, 0.1)
        want_losses.append(loss)
        for v, value in zip(variables, new_values):
            v.assign(value)
    want = [ops.convert_to_numpy(v) for v in variables]
    for v, value in zip(variables, start):
        v.assign(value)

    joint = jk.JointModel({"m1": m1, "m2": m2})
    joint.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss={"m1": "mse", "m2": "mae"},
        loss_weights={"m1": 1.0, "m2": 0.5},
    )
    got_losses = [
        joint.train_on_batch(
            x[s * 16 : (s + 1) * 16], y[s * 16 : (s + 1) * 16], return_dict=True
        )["loss"]
        for s in range(3)
    ]
    np.testing.assert_allclose(got_losses, want_losses, rtol=1e-5)
    for v, value in zip(variables, want):
        np.testing.assert_allclose(ops.convert_to_numpy(v), value, atol=1e-5)


def test_batchnorm_moving_statistics_of_every_submodel_are_updated():
    def with_bn(name):
        return keras.Sequential(
            [
                keras.Input((4,)),
                keras.layers.Dense(6),
                keras.layers.BatchNormalization(),
                keras.layers.Dense(1),
            ],
            name=name,
        )

    m1, m2 = with_bn("a"), with_bn("b")
    joint = jk.JointModel({"m1": m1, "m2": m2})
    joint.compile(optimizer="sgd", loss="mse")
    x, y = data()
    joint.fit(x + 3.0, y, batch_size=16, epochs=1, verbose=0)
    for model in (m1, m2):
        bn = model.layers[1]
        assert not np.allclose(ops.convert_to_numpy(bn.moving_mean), 0.0)
        # Inference uses the moving statistics, as in Keras.
        want = ops.convert_to_numpy(model(x, training=False))
        got = joint.predict(x, verbose=0)["m1" if model is m1 else "m2"]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_dropout_is_active_in_training_only_and_its_seed_advances():
    def with_dropout(name):
        return keras.Sequential(
            [
                keras.Input((4,)),
                keras.layers.Dense(32, activation="relu"),
                keras.layers.Dropout(0.5, seed=3),
                keras.layers.Dense(1),
            ],
            name=name,
        )

    joint = jk.JointModel({"m1": with_dropout("a"), "m2": with_dropout("b")})
    # A zero learning rate keeps the weights: only dropout changes losses.
    joint.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    x, y = data(n=16)
    train_losses = [
        joint.train_on_batch(x, y, return_dict=True)["loss"] for _ in range(3)
    ]
    eval_losses = [
        joint.test_on_batch(x, y, return_dict=True)["loss"] for _ in range(2)
    ]
    assert eval_losses[0] == eval_losses[1]
    assert all(not np.isclose(t, eval_losses[0]) for t in train_losses)
    assert len(set(np.round(train_losses, 6))) == 3  # a new mask each step
    p1, p2 = joint.predict(x, verbose=0), joint.predict(x, verbose=0)
    np.testing.assert_array_equal(p1["m1"], p2["m1"])


def test_metric_state_accumulates_over_batches_and_resets_per_evaluate():
    m1, m2 = mlp("a"), mlp("b")
    joint = jk.JointModel({"m1": m1, "m2": m2})
    joint.compile(optimizer="sgd", loss="mse", metrics={"m2": ["mae"]})
    x, y = data()
    for _ in range(2):
        logs = joint.evaluate(x, y, batch_size=7, verbose=0, return_dict=True)
        p2 = ops.convert_to_numpy(m2(x))
        np.testing.assert_allclose(logs["m2_mae"], np.mean(np.abs(p2 - y)), rtol=1e-5)
        np.testing.assert_allclose(logs["m2_loss"], np.mean((p2 - y) ** 2), rtol=1e-5)


def test_a_submodel_without_targets_is_not_moved_by_momentum():
    # Adam's moments would move a submodel given a zero gradient; one
    # that no loss reaches gets no gradient, on every backend.
    a = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)], name="a")
    b = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)], name="b")
    joint = jk.JointModel({"a": a, "b": b})
    joint.compile(optimizer=keras.optimizers.Adam(0.1), loss="mse")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 3)).astype("float32")
    y = rng.normal(size=(8, 2)).astype("float32")
    joint.train_on_batch(x, {"a": y, "b": y})
    before_a = [np.array(w) for w in a.get_weights()]
    before_b = [np.array(w) for w in b.get_weights()]
    joint.train_on_batch(x, {"a": y})
    for got, want in zip(b.get_weights(), before_b):
        np.testing.assert_array_equal(got, want)
    assert not np.allclose(a.get_weights()[0], before_a[0])
