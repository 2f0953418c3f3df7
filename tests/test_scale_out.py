"""Mixed precision, loss scaling, gradient accumulation and clipping.

Each runs in one process on every backend; the multi-device paths are in
`tests/test_distributed.py`.
"""

import keras
import numpy as np
import pytest
from keras import ops

import joint_keras as jk
from tests import reference
from tests.test_weighting_gradient_level import shared_trunk
from tests.test_weighting_gradient_level import task_data


@pytest.fixture
def dtype_policy():
    """Sets a global dtype policy for one test, and restores float32."""
    yield keras.config.set_dtype_policy
    keras.config.set_dtype_policy("float32")


@pytest.mark.parametrize("weighting", ["gradnorm", "pcgrad", "mgda"])
def test_gradient_level_strategies_see_unscaled_gradients(weighting):
    # A loss scale multiplies every per-task gradient; the strategy must
    # see them unscaled (GradNorm's weight step depends on their norms),
    # and the update must be the same as without scaling.
    x, ys = task_data()
    results = []
    for scale in (None, 1024.0):
        submodels = shared_trunk()
        joint = jk.JointModel(submodels)
        joint.compile(
            optimizer=keras.optimizers.SGD(0.1, loss_scale_factor=scale),
            loss="mse",
            weighting=weighting,
        )
        for _ in range(3):
            logs = joint.train_on_batch(x, ys, return_dict=True)
        results.append((reference.weights_of(*submodels.values()), logs, joint))
    (plain, plain_logs, plain_model), (scaled, scaled_logs, scaled_model) = results
    for a, b in zip(plain, scaled):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)
    for key in ("t0_weight", "t1_weight", "grad_cos/t0/t1"):
        np.testing.assert_allclose(scaled_logs[key], plain_logs[key], rtol=1e-4)
    if weighting == "gradnorm":
        np.testing.assert_allclose(
            ops.convert_to_numpy(scaled_model._weighting.task_scales),
            ops.convert_to_numpy(plain_model._weighting.task_scales),
            rtol=1e-4,
        )
        # And the weights moved at all, so the comparison means something.
        assert not np.allclose(
            ops.convert_to_numpy(plain_model._weighting.task_scales), 1.0
        )


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("weighting", ["fixed", "uncertainty", "pcgrad", "gradnorm"])
def test_mixed_precision_trains_without_nans(dtype_policy, policy, weighting):
    dtype_policy(policy)
    x, ys = task_data(n=64)
    submodels = shared_trunk()
    joint = jk.JointModel(submodels)
    joint.compile(
        optimizer=keras.optimizers.Adam(0.01), loss="mse", weighting=weighting
    )
    if policy == "mixed_float16":
        # Keras wraps the optimizer to scale the loss, as for any model.
        assert isinstance(joint.optimizer, keras.optimizers.LossScaleOptimizer)
    assert submodels["t0"].layers[-1].compute_dtype == policy.split("_")[1]
    history = joint.fit(x, ys, batch_size=16, epochs=8, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)), losses
    assert losses[-1] < losses[0]
    for v in joint.trainable_variables:
        assert v.dtype == "float32"
        assert np.all(np.isfinite(ops.convert_to_numpy(v)))


def test_mixed_float16_with_one_optimizer_per_submodel(dtype_policy):
    dtype_policy("mixed_float16")
    x, ys = task_data(n=64)
    submodels = shared_trunk()
    joint = jk.JointModel(submodels)
    joint.compile(
        optimizer={"t0": "adam", "t1": "sgd"},
        loss="mse",
        update_every={"t1": 2},
    )
    assert isinstance(joint.optimizer, keras.optimizers.LossScaleOptimizer)
    assert isinstance(joint.optimizer.inner_optimizer, jk.SubmodelOptimizer)
    history = joint.fit(x, ys, batch_size=16, epochs=5, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert history.history["loss"][-1] < history.history["loss"][0]


def _two_models():
    keras.utils.set_random_seed(3)
    shared = keras.layers.Dense(4, activation="tanh", name="shared")
    submodels = {}
    for name in ("a", "b"):
        inputs = keras.Input((3,))
        submodels[name] = keras.Model(
            inputs,
            keras.layers.Dense(1, name=f"head_{name}")(shared(inputs)),
            name=name,
        )
    return submodels


def _data(n=32):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(n, 3)).astype("float32")
    y = {"a": x[:, :1] * 3.0, "b": -x[:, 1:2] * 2.0}
    return x, {k: v.astype("float32") for k, v in y.items()}


@pytest.mark.parametrize("per_submodel", [False, True])
@pytest.mark.parametrize("weighting", ["fixed", "uncertainty"])
def test_gradient_accumulation_matches_the_large_batch(per_submodel, weighting):
    # Two accumulated batches of 16 == one batch of 32 (mean losses).
    x, y = _data(32)

    def train(batch_size, accumulate):
        submodels = _two_models()
        kwargs = dict(gradient_accumulation_steps=accumulate) if accumulate else {}
        if per_submodel:
            optimizer = {
                "a": keras.optimizers.Adam(0.1, **kwargs),
                "b": keras.optimizers.SGD(0.1, **kwargs),
            }
        else:
            optimizer = keras.optimizers.Adam(0.1, **kwargs)
        joint = jk.JointModel(submodels)
        joint.compile(optimizer=optimizer, loss="mse", weighting=weighting)
        joint.fit(x, y, batch_size=batch_size, epochs=2, shuffle=False, verbose=0)
        return reference.weights_of(*submodels.values())

    initial = reference.weights_of(*_two_models().values())
    large = train(32, None)
    accumulated = train(16, 2)
    for a, b, w0 in zip(large, accumulated, initial):
        np.testing.assert_allclose(b, a, atol=2e-6)
        assert not np.allclose(a, w0)


@pytest.mark.parametrize("per_submodel", [False, True])
def test_gradient_accumulation_is_refused_with_gradient_level_strategies(
    per_submodel,
):
    # They combine each batch's per-task gradients, a nonlinear map: summed
    # over micro-batches it is not the large batch's combination.
    optimizer = keras.optimizers.SGD(0.1, gradient_accumulation_steps=2)
    if per_submodel:
        optimizer = {"a": optimizer, "b": "sgd"}
    joint = jk.JointModel(_two_models())
    with pytest.raises(ValueError, match="gradient_accumulation_steps"):
        joint.compile(optimizer=optimizer, loss="mse", weighting="pcgrad")


def _hand_step(submodels, x, y):
    variables = reference.unique_variables(*submodels.values())

    def loss_fn():
        return sum(
            ops.mean(keras.losses.mean_squared_error(y[n], m(x)))
            for n, m in submodels.items()
        )

    _, grads = reference.value_and_grad(loss_fn, variables)
    return variables, grads


@pytest.mark.parametrize("clip", ["clipnorm", "global_clipnorm", "clipvalue"])
def test_clipping_acts_on_the_joint_gradient(clip):
    x, y = _data(16)
    submodels = _two_models()
    variables, grads = _hand_step(submodels, x, y)
    before = [ops.convert_to_numpy(v) for v in variables]
    limit = 0.05
    if clip == "clipnorm":
        clipped = [g * min(1.0, limit / np.linalg.norm(g)) for g in grads]
    elif clip == "global_clipnorm":
        total = np.sqrt(sum((g**2).sum() for g in grads))
        clipped = [g * min(1.0, limit / total) for g in grads]
    else:
        clipped = [np.clip(g, -limit, limit) for g in grads]
    assert any(not np.allclose(c, g) for c, g in zip(clipped, grads))
    joint = jk.JointModel(submodels)
    joint.compile(optimizer=keras.optimizers.SGD(1.0, **{clip: limit}), loss="mse")
    joint.train_on_batch(x, y)
    for v, w0, g in zip(variables, before, clipped):
        np.testing.assert_allclose(ops.convert_to_numpy(v), w0 - g, atol=1e-6)


def test_each_submodel_optimizer_clips_its_own_gradients():
    # With one optimizer per submodel, `global_clipnorm` is the norm of the
    # gradients that optimizer applies: "a" owns the shared layer.
    x, y = _data(16)
    submodels = _two_models()
    variables, grads = _hand_step(submodels, x, y)
    before = [ops.convert_to_numpy(v) for v in variables]
    owner = {id(v): "a" for v in submodels["a"].trainable_variables}
    limit = 0.05
    expected = {}
    for name in ("a", "b"):
        mine = [i for i, v in enumerate(variables) if owner.get(id(v), "b") == name]
        total = np.sqrt(sum((grads[i] ** 2).sum() for i in mine))
        for i in mine:
            expected[i] = before[i] - grads[i] * min(1.0, limit / total)
    joint = jk.JointModel(submodels)
    joint.compile(
        optimizer={
            "a": keras.optimizers.SGD(1.0, global_clipnorm=limit),
            "b": keras.optimizers.SGD(1.0, global_clipnorm=limit),
        },
        loss="mse",
    )
    joint.train_on_batch(x, y)
    for i, v in enumerate(variables):
        np.testing.assert_allclose(ops.convert_to_numpy(v), expected[i], atol=1e-6)
