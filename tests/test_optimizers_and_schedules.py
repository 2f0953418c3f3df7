"""One optimizer per submodel, update schedules and `JointLoss(updates=...)`,
each checked against hand-written gradient steps."""

import keras
import numpy as np
import pytest
from keras import ops

import joint_keras as jk
from tests import reference


def mlp(name, shared=None):
    inputs = keras.Input((3,))
    hidden = (shared or keras.layers.Dense(4, activation="tanh"))(inputs)
    return keras.Model(inputs, keras.layers.Dense(2)(hidden), name=name)


def data(n=16, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(n, 3)).astype("float32"),
        rng.normal(size=(n, 2)).astype("float32"),
    )


def mse(y, p):
    return ops.mean(keras.losses.mean_squared_error(y, p))


def numpy_values(variables):
    return [np.array(ops.convert_to_numpy(v)) for v in variables]


def test_each_submodel_is_stepped_by_its_own_optimizer():
    a, b = mlp("a"), mlp("b")
    x, y = data()
    _, grads = reference.value_and_grad(
        lambda: mse(y, a(x)) + mse(y, b(x)), reference.unique_variables(a, b)
    )
    before = reference.weights_of(a, b)
    n_a = len(a.trainable_variables)
    joint = jk.JointModel({"a": a, "b": b})
    joint.compile(
        optimizer={"a": keras.optimizers.SGD(0.1), "b": keras.optimizers.Adam(0.01)},
        loss="mse",
    )
    joint.train_on_batch(x, y)
    after = reference.weights_of(a, b)
    for w0, w1, g in zip(before[:n_a], after[:n_a], grads[:n_a]):
        np.testing.assert_allclose(w1, w0 - 0.1 * g, atol=1e-6)
    # Adam's first step: m = (1 - b1) g, v = (1 - b2) g^2, bias-corrected.
    for w0, w1, g in zip(before[n_a:], after[n_a:], grads[n_a:]):
        alpha = 0.01 * np.sqrt(1 - 0.999) / (1 - 0.9)
        step = alpha * 0.1 * g / (np.sqrt(0.001 * g * g) + 1e-7)
        np.testing.assert_allclose(w1, w0 - step, atol=1e-6)
    names = [opt.name for opt in joint.optimizer.optimizers]
    assert names == ["a_SGD", "b_adam"] or names == ["a_sgd", "b_adam"]


def test_a_shared_variable_is_updated_once_by_the_first_owner():
    shared = keras.layers.Dense(4, activation="tanh", name="shared")
    a, b = mlp("a", shared), mlp("b", shared)
    x, y = data()
    variables = reference.unique_variables(a, b)
    _, grads = reference.value_and_grad(lambda: mse(y, a(x)) + mse(y, b(x)), variables)
    before = reference.weights_of(a, b)
    joint = jk.JointModel({"a": a, "b": b})
    joint.compile(
        optimizer={"a": keras.optimizers.SGD(0.1), "b": keras.optimizers.SGD(0.5)},
        loss="mse",
    )
    joint.train_on_batch(x, y)
    owned_by_a = {id(v) for v in a.trainable_variables}
    for v, w0, g in zip(variables, before, grads):
        lr = 0.1 if id(v) in owned_by_a else 0.5
        np.testing.assert_allclose(ops.convert_to_numpy(v), w0 - lr * g, atol=1e-6)
    # The shared kernel and bias live in a's optimizer only.
    a_opt, b_opt = joint.optimizer.optimizers
    assert len(a_opt._trainable_variables) == 4
    assert len(b_opt._trainable_variables) == 2


def test_update_every_skips_a_submodel_and_freezes_its_optimizer_state():
    a, b = mlp("a"), mlp("b")
    x, y = data()
    n_a = len(a.trainable_variables)
    variables = reference.unique_variables(a, b)
    joint = jk.JointModel({"a": a, "b": b})
    joint.compile(
        optimizer={
            "a": keras.optimizers.SGD(0.1),
            "b": keras.optimizers.SGD(0.1, momentum=0.9),
        },
        loss="mse",
        update_every={"b": 2},
    )
    velocity = [np.zeros_like(w) for w in reference.weights_of(b)]
    for step in range(5):
        before = reference.weights_of(a, b)
        _, grads = reference.value_and_grad(
            lambda: mse(y, a(x)) + mse(y, b(x)), variables
        )
        joint.train_on_batch(x, y)
        after = reference.weights_of(a, b)
        for w0, w1, g in zip(before[:n_a], after[:n_a], grads[:n_a]):
            np.testing.assert_allclose(w1, w0 - 0.1 * g, atol=1e-6)
        for i, (w0, w1, g) in enumerate(zip(before[n_a:], after[n_a:], grads[n_a:])):
            if step % 2 == 0:
                velocity[i] = 0.9 * velocity[i] - 0.1 * g
                np.testing.assert_allclose(w1, w0 + velocity[i], atol=1e-6)
            else:
                np.testing.assert_array_equal(w1, w0)
    a_opt, b_opt = joint.optimizer.optimizers
    assert int(ops.convert_to_numpy(a_opt.iterations)) == 5
    assert int(ops.convert_to_numpy(b_opt.iterations)) == 3
    assert int(ops.convert_to_numpy(joint.optimizer.iterations)) == 5


def test_update_every_accepts_a_callable_of_the_step():
    joint = jk.JointModel({"a": mlp("a"), "b": mlp("b")})
    joint.compile(
        optimizer={"a": "sgd", "b": "sgd"},
        loss="mse",
        update_every=lambda step: {"b": ops.equal(ops.mod(step, 3), 1)},
    )
    x, y = data(n=48)
    joint.fit(x, y, batch_size=8, epochs=1, verbose=0)  # 6 steps: b on 1 and 4
    a_opt, b_opt = joint.optimizer.optimizers
    assert int(ops.convert_to_numpy(a_opt.iterations)) == 6
    assert int(ops.convert_to_numpy(b_opt.iterations)) == 2


def agreement(y_true, y_pred):
    return ops.mean(ops.square(y_pred["a"] - y_pred["b"]))


def test_joint_loss_updates_only_the_named_submodels():
    a, b = mlp("a"), mlp("b")
    x, y = data()
    variables = reference.unique_variables(a, b)
    n_a = len(a.trainable_variables)
    _, g_all = reference.value_and_grad(
        lambda: (
            mse(y, a(x)) + mse(y, b(x)) + 0.5 * agreement(None, {"a": a(x), "b": b(x)})
        ),
        variables,
    )
    _, g_sup = reference.value_and_grad(lambda: mse(y, a(x)) + mse(y, b(x)), variables)
    before = reference.weights_of(a, b)
    joint = jk.JointModel({"a": a, "b": b})
    joint.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss="mse",
        joint_losses=[jk.JointLoss(agreement, weight=0.5, updates=["a"])],
    )
    logs = joint.train_on_batch(x, y, return_dict=True)
    assert set(logs) == {"loss", "a_loss", "b_loss", "agreement_loss"}
    after = reference.weights_of(a, b)
    # a: gradient of everything; b: the agreement term does not move it.
    want = [w - 0.1 * g for w, g in zip(before[:n_a], g_all[:n_a])]
    want += [w - 0.1 * g for w, g in zip(before[n_a:], g_sup[n_a:])]
    for got, w in zip(after, want):
        np.testing.assert_allclose(got, w, atol=1e-6)


def gan_parts(dim=2):
    generator = keras.Sequential(
        [keras.Input((dim,)), keras.layers.Dense(dim)], name="generator"
    )
    discriminator = keras.Sequential(
        [
            keras.Input((dim,)),
            keras.layers.Dense(8, activation="tanh"),
            keras.layers.Dense(1, activation="sigmoid"),
        ],
        name="discriminator",
    )
    noise = keras.Input((dim,))
    fake = keras.Model(noise, discriminator(generator(noise)), name="fake")
    return generator, discriminator, fake


def bce(target, p):
    return ops.mean(keras.losses.binary_crossentropy(target, p))


def disc_loss(y_true, y_pred):
    real, fake = y_pred["disc"], y_pred["fake"]
    return bce(ops.ones_like(real), real) + bce(ops.zeros_like(fake), fake)


def gen_loss(y_true, y_pred):
    return bce(ops.ones_like(y_pred["fake"]), y_pred["fake"])


def test_a_gan_step_is_two_opposite_hand_steps():
    generator, discriminator, fake = gan_parts()
    rng = np.random.default_rng(3)
    z = rng.normal(size=(16, 2)).astype("float32")
    real = (rng.normal(size=(16, 2)) + 2.0).astype("float32")
    g_vars, d_vars = generator.trainable_variables, discriminator.trainable_variables

    def d_objective():
        return disc_loss(None, {"disc": discriminator(real), "fake": fake(z)})

    def g_objective():
        return gen_loss(None, {"fake": fake(z)})

    want_d_loss, d_grads = reference.value_and_grad(d_objective, d_vars)
    _, g_grads = reference.value_and_grad(g_objective, g_vars)
    want_d = [w - 0.05 * g for w, g in zip(numpy_values(d_vars), d_grads)]
    want_g = [w - 0.2 * g for w, g in zip(numpy_values(g_vars), g_grads)]

    gan = jk.JointModel({"gen": generator, "disc": discriminator, "fake": fake})
    gan.compile(
        optimizer={
            "gen": keras.optimizers.SGD(0.2),
            "disc": keras.optimizers.SGD(0.05),
        },
        joint_losses=[
            jk.JointLoss(disc_loss, name="d", updates=["disc"]),
            jk.JointLoss(gen_loss, name="g", updates=["gen"]),
        ],
    )
    logs = gan.train_on_batch(
        {"gen": z, "disc": real, "fake": z}, None, return_dict=True
    )
    np.testing.assert_allclose(logs["d_loss"], want_d_loss, rtol=1e-5)
    for got, want in zip(numpy_values(d_vars), want_d):
        np.testing.assert_allclose(got, want, atol=1e-6)
    for got, want in zip(numpy_values(g_vars), want_g):
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_a_gan_trains_with_fit_and_a_discriminator_schedule():
    generator, discriminator, fake = gan_parts(dim=1)
    rng = np.random.default_rng(4)
    n, target = 512, 3.0
    z = rng.normal(size=(n, 1)).astype("float32")
    real = (rng.normal(size=(n, 1)) * 0.5 + target).astype("float32")
    gan = jk.JointModel({"gen": generator, "disc": discriminator, "fake": fake})
    gan.compile(
        optimizer={
            "gen": keras.optimizers.Adam(0.01, beta_1=0.5),
            "disc": keras.optimizers.Adam(0.01, beta_1=0.5),
        },
        joint_losses=[
            jk.JointLoss(disc_loss, name="d", updates=["disc"]),
            jk.JointLoss(gen_loss, name="g", updates=["gen"]),
        ],
        update_every={"gen": 2},  # two discriminator steps per generator step
    )
    start = np.mean(np.asarray(generator.predict(z, verbose=0)), axis=0)
    gan.fit(
        {"gen": z, "disc": real, "fake": z}, None, batch_size=64, epochs=30, verbose=0
    )
    end = np.mean(np.asarray(generator.predict(z, verbose=0)), axis=0)
    # The generated mean moved toward the data mean.
    assert abs(end[0] - target) < 0.6 * abs(start[0] - target)
    gen_opt, disc_opt = gan.optimizer.optimizers
    assert int(ops.convert_to_numpy(gen_opt.iterations)) == 30 * 8 // 2
    assert int(ops.convert_to_numpy(disc_opt.iterations)) == 30 * 8


def two_optimizer_joint():
    joint = jk.JointModel({"a": mlp("a"), "b": mlp("b")})
    joint.compile(
        optimizer={"a": keras.optimizers.SGD(0.1), "b": keras.optimizers.SGD(0.4)},
        loss="mse",
    )
    return joint


def learning_rates(joint):
    return [
        float(ops.convert_to_numpy(o.learning_rate)) for o in joint.optimizer.optimizers
    ]


def test_learning_rate_scheduler_sets_every_optimizer():
    joint = two_optimizer_joint()
    x, y = data()
    scheduler = keras.callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.5)
    joint.fit(x, y, epochs=2, verbose=0, callbacks=[scheduler])
    np.testing.assert_allclose(learning_rates(joint), [0.025, 0.1], rtol=1e-6)


def test_reduce_lr_on_plateau_reduces_every_optimizer():
    joint = two_optimizer_joint()
    x, y = data()
    # `min_delta` so large that no epoch after the first counts as better.
    plateau = keras.callbacks.ReduceLROnPlateau(
        monitor="a_loss", factor=0.1, patience=0, min_delta=1e9
    )
    history = joint.fit(x, y, epochs=3, verbose=0, callbacks=[plateau])
    np.testing.assert_allclose(learning_rates(joint), [0.001, 0.004], rtol=1e-5)
    logged = [k for k in history.history if k.startswith("learning_rate_")]
    assert len(logged) == 2 and all(
        k[len("learning_rate_") :][0] in "ab" for k in logged
    )


def test_per_submodel_optimizers_and_schedules_survive_save_and_resume(tmp_path):
    def build():
        keras.utils.set_random_seed(7)
        joint = jk.JointModel({"a": mlp("a"), "b": mlp("b")})
        joint.compile(
            optimizer={
                "a": keras.optimizers.Adam(
                    keras.optimizers.schedules.ExponentialDecay(0.01, 3, 0.5)
                ),
                "b": keras.optimizers.SGD(0.05, momentum=0.9),
            },
            loss="mse",
            update_every={"b": 3},
        )
        return joint

    x, y = data(n=32)
    straight = build()
    straight.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)

    first = build()
    first.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    first.save(tmp_path / "j.keras")
    resumed = keras.models.load_model(tmp_path / "j.keras")
    assert isinstance(resumed.optimizer, jk.SubmodelOptimizer)
    assert resumed.optimizer.update_every == {"b": 3}
    for o1, o2 in zip(first.optimizer.variables, resumed.optimizer.variables):
        np.testing.assert_array_equal(
            ops.convert_to_numpy(o1), ops.convert_to_numpy(o2)
        )
    resumed.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    for w1, w2 in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(w1, w2, atol=1e-6)
    b_opt = resumed.optimizer.optimizers[1]
    assert int(ops.convert_to_numpy(b_opt.iterations)) == 3  # steps 0, 3, 6


def test_optimizer_and_schedule_errors():
    joint = jk.JointModel({"a": mlp("a"), "b": mlp("b")})
    with pytest.raises(ValueError, match="submodels \\['b'\\] have variables no"):
        joint.compile(optimizer={"a": "sgd"}, loss="mse")
    with pytest.raises(ValueError, match="`optimizer` has keys that name no submodel"):
        joint.compile(optimizer={"a": "sgd", "b": "sgd", "c": "sgd"}, loss="mse")
    with pytest.raises(
        ValueError, match=r"`update_every\['b'\]` must be a positive int"
    ):
        joint.compile(optimizer="sgd", loss="mse", update_every={"b": 0})
    with pytest.raises(ValueError, match="`update_every` has keys that name no"):
        joint.compile(optimizer="sgd", loss="mse", update_every={"c": 2})
    with pytest.raises(TypeError, match="`update_every` must be a dict"):
        joint.compile(optimizer="sgd", loss="mse", update_every=2)
    with pytest.raises(
        ValueError, match="`updates` of joint loss 'agreement' names no"
    ):
        joint.compile(loss="mse", joint_losses=[jk.JointLoss(agreement, updates=["c"])])
    with pytest.raises(ValueError, match="non-empty list"):
        jk.JointLoss(agreement, updates=[])


def test_built_in_joint_losses_take_updates_and_save_it():
    a, b = mlp("a"), mlp("b")
    x, _ = data()
    before_a = reference.weights_of(a)
    _, grads = reference.value_and_grad(
        lambda: ops.mean(keras.losses.mean_squared_error(a(x), b(x))),
        b.trainable_variables,
    )
    want_b = [w - 0.1 * g for w, g in zip(reference.weights_of(b), grads)]
    term = jk.losses.Consistency(["a", "b"], updates=["b"])
    joint = jk.JointModel({"a": a, "b": b})
    joint.compile(optimizer=keras.optimizers.SGD(0.1), joint_losses=[term])
    joint.train_on_batch(x, None)
    for got, want in zip(reference.weights_of(a), before_a):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(reference.weights_of(b), want_b):
        np.testing.assert_allclose(got, want, atol=1e-6)
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(term)
    )
    assert restored.updates == ["b"]
