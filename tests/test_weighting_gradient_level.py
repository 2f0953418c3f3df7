"""Gradient-level strategies: their math on small hand cases, and one
training step against per-task gradients computed by hand."""

import itertools

import keras
import numpy as np
import pytest
from keras import ops

import joint_keras as jk
from tests import reference


def built(strategy, num_tasks):
    strategy.build_for_tasks([f"t{i}" for i in range(num_tasks)], [1.0] * num_tasks)
    return strategy


def coefficients(strategy, grads):
    grads = np.asarray(grads, dtype="float32")
    gram = ops.convert_to_tensor(grads @ grads.T)
    losses = ops.ones((len(grads),))
    a, b = built(strategy, len(grads)).coefficients(
        gram, losses, list(range(len(grads))), training=True
    )
    return np.asarray(ops.convert_to_numpy(a)), np.asarray(ops.convert_to_numpy(b))


def pcgrad_by_hand(grads, order):
    projected = []
    for i, g in enumerate(grads):
        g = g.copy()
        for j in order:
            if j != i and g @ grads[j] < 0:
                g = g - (g @ grads[j]) / (grads[j] @ grads[j]) * grads[j]
        projected.append(g)
    return np.sum(projected, axis=0)


CONFLICTING = np.array([[1.0, 0.0], [-1.0, 1.0]])
ALIGNED = np.array([[1.0, 0.5], [0.5, 1.0]])
THREE = np.array([[1.0, 0.2, 0.0], [-0.8, 1.0, 0.3], [0.1, -0.9, 1.0]])


def project_by_hand(grads, i, order):
    """Task `i`'s gradient, projected in `order` as in PCGrad."""
    g = grads[i].copy()
    for j in order:
        if j != i and g @ grads[j] < 0:
            g = g - (g @ grads[j]) / (grads[j] @ grads[j]) * grads[j]
    return g


def test_pcgrad_projects_conflicts_away():
    a, _ = coefficients(jk.weighting.PCGrad(seed=0), CONFLICTING)
    np.testing.assert_allclose(a @ CONFLICTING, [0.5, 1.5], atol=1e-6)
    a, _ = coefficients(jk.weighting.PCGrad(seed=0), ALIGNED)
    np.testing.assert_allclose(a, [1.0, 1.0], atol=1e-6)
    # Three tasks: the sum of each task's projection in an order of its own
    # (Yu et al., Algorithm 1), or, with `shared_order`, one order for all.
    # Every pair conflicts (gradients 120 degrees apart), so order matters.
    spread = np.array([[1.0, 0.0], [-0.5, 0.9], [-0.6, -0.8]])
    orders = list(itertools.permutations(range(3)))
    per_task = [
        sum(project_by_hand(spread, i, o) for i, o in enumerate(choice))
        for choice in itertools.product(orders, repeat=3)
    ]
    shared = [pcgrad_by_hand(spread, o) for o in orders]
    draws = {"own": [], "shared": []}
    for seed in range(60):
        own, shared_one = jk.weighting.PCGrad(seed), jk.weighting.PCGrad(seed, True)
        for kind, strategy in (("own", own), ("shared", shared_one)):
            got = coefficients(strategy, spread)[0] @ spread
            candidates = per_task if kind == "own" else shared
            distances = [np.abs(got - c).max() for c in candidates]
            assert min(distances) < 1e-5
            draws[kind].append(int(np.argmin(distances)))
    # Per-task orders reach combinations no shared order gives.
    shared_results = {tuple(np.round(c, 5)) for c in shared}
    assert any(
        tuple(np.round(per_task[k], 5)) not in shared_results for k in draws["own"]
    )


def test_mgda_finds_the_min_norm_point():
    a, b = coefficients(jk.weighting.MGDA(), [[1.0, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(a, [0.5, 0.5], atol=1e-5)
    np.testing.assert_allclose(b, [1.0, 1.0])
    a, _ = coefficients(jk.weighting.MGDA(), [[1.0, 0.0], [2.0, 0.0]])
    np.testing.assert_allclose(a, [1.0, 0.0], atol=1e-5)
    a, _ = coefficients(jk.weighting.MGDA(), THREE)
    grid = [
        w for w in itertools.product(np.linspace(0, 1, 201), repeat=2) if sum(w) <= 1
    ]
    best = min(np.linalg.norm(np.array([*w, 1 - sum(w)]) @ THREE) for w in grid)
    assert np.linalg.norm(a @ THREE) <= best + 1e-3
    np.testing.assert_allclose(a.sum(), 1.0, atol=1e-5)


def cagrad_by_hand(grads, c):
    from scipy.optimize import minimize

    grads = np.asarray(grads)
    g0 = grads.mean(axis=0)
    phi = c**2 * g0 @ g0

    def objective(z):
        w = np.exp(z) / np.exp(z).sum()
        gw = w @ grads
        return gw @ g0 + np.sqrt(phi) * np.linalg.norm(gw)

    z = minimize(objective, np.zeros(len(grads)), method="Nelder-Mead", tol=1e-12).x
    w = np.exp(z) / np.exp(z).sum()
    gw = w @ grads
    return (g0 + np.sqrt(phi) / np.linalg.norm(gw) * gw) / (1 + c**2)


@pytest.mark.parametrize("grads", [CONFLICTING, THREE], ids=["two", "three"])
def test_cagrad_matches_its_optimization_problem(grads):
    a, _ = coefficients(jk.weighting.CAGrad(c=0.4), grads)
    np.testing.assert_allclose(a @ grads, cagrad_by_hand(grads, 0.4), atol=1e-5)
    a, _ = coefficients(jk.weighting.CAGrad(c=0.0), grads)
    np.testing.assert_allclose(a, np.full(len(grads), 1 / len(grads)), atol=1e-6)


def test_the_hard_cases_of_issue_16_are_exact():
    # Exact answers from an independent solver (TorchJD's and the authors'
    # conventions, float64).
    j = np.array([[1, 0.1], [-2, 0.5], [1, -0.5]])
    a, _ = coefficients(jk.weighting.CAGrad(c=0.4), j)
    np.testing.assert_allclose(a @ j, [0.006395, 0.019185], rtol=1e-3, atol=1e-6)
    j = np.array([[-0.1, -2, 0.1], [2, -2, -0.1], [0.1, 3, 0.1]])
    a, _ = coefficients(jk.weighting.UPGrad(), j)
    np.testing.assert_allclose(a @ j, [0.6678, -0.0246, 0.2680], atol=1e-4)
    assert np.all(j @ (a @ j) >= -1e-6 * np.abs(j).max() ** 2)


def test_upgrad_never_conflicts_and_averages_aligned_gradients():
    a, _ = coefficients(jk.weighting.UPGrad(), ALIGNED)
    np.testing.assert_allclose(a, [0.5, 0.5], atol=1e-6)
    # Two conflicting tasks, in closed form: v_1 = (1, -m12 / m22), etc.
    m = CONFLICTING @ CONFLICTING.T
    v1 = np.array([1.0, max(0.0, -m[0, 1] / m[1, 1])])
    v2 = np.array([max(0.0, -m[0, 1] / m[0, 0]), 1.0])
    a, _ = coefficients(jk.weighting.UPGrad(), CONFLICTING)
    np.testing.assert_allclose(a, (v1 + v2) / 2, atol=1e-5)
    a, _ = coefficients(jk.weighting.UPGrad(), THREE)
    direction = a @ THREE
    assert np.all(THREE @ direction >= -1e-5)


def shared_trunk(num_tasks=2, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(5, activation="tanh", name="trunk")(inputs)
    return {
        # Equal heads, so that opposite targets make the tasks conflict.
        f"t{k}": keras.Model(
            inputs,
            keras.layers.Dense(
                1, kernel_initializer=keras.initializers.Constant(0.5), name=f"head{k}"
            )(hidden),
        )
        for k in range(num_tasks)
    }


def task_data(num_tasks=2, n=16):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4)).astype("float32")
    # Opposite targets, so that the tasks' gradients on the trunk conflict.
    ys = {
        f"t{k}": ((-1) ** k * 5.0 * x[:, :1] + 0.1 * k).astype("float32")
        for k in range(num_tasks)
    }
    return x, ys


def hand_task_gradients(submodels, x, ys):
    variables = reference.unique_variables(*submodels.values())
    per_task = []
    for name, model in submodels.items():
        _, grads = reference.value_and_grad(
            lambda m=model, y=ys[name]: ops.mean(
                keras.losses.mean_squared_error(y, m(x))
            ),
            variables,
        )
        # A head gets no gradient from the other task.
        per_task.append(
            [np.zeros(v.shape) if g is None else g for v, g in zip(variables, grads)]
        )
    return variables, per_task


@pytest.mark.parametrize("mode", ["vectorized", "sequential"])
@pytest.mark.parametrize("name", ["pcgrad", "mgda", "upgrad"])
def test_one_step_matches_per_task_gradients_by_hand(name, mode):
    submodels = shared_trunk()
    x, ys = task_data()
    variables, per_task = hand_task_gradients(submodels, x, ys)
    shared = [0, 1]  # trunk kernel and bias come first
    flat = np.stack([np.concatenate([g[i].ravel() for i in shared]) for g in per_task])
    g1, g2 = flat
    if name == "pcgrad":
        direction = pcgrad_by_hand(flat, [0, 1])
    elif name == "mgda":
        w = np.clip((g2 - g1) @ g2 / ((g1 - g2) @ (g1 - g2)), 0, 1)
        direction = w * g1 + (1 - w) * g2
    else:
        m = flat @ flat.T
        v1 = np.array([1.0, max(0.0, -m[0, 1] / m[1, 1])])
        v2 = np.array([max(0.0, -m[0, 1] / m[0, 0]), 1.0])
        direction = ((v1 + v2) / 2) @ flat
    assert g1 @ g2 < 0, "the test data should make the tasks conflict"
    before = reference.weights_of(*submodels.values())
    joint = jk.JointModel(submodels)
    strategy = type(jk.weighting.get(name))(per_task_gradients=mode)
    joint.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse", weighting=strategy)
    logs = joint.train_on_batch(x, ys, return_dict=True)
    after = reference.weights_of(*submodels.values())
    offset = 0
    for i in shared:
        size = before[i].size
        step = direction[offset : offset + size].reshape(before[i].shape)
        np.testing.assert_allclose(after[i], before[i] - 0.1 * step, atol=1e-5)
        offset += size
    for i in range(2, len(variables)):
        own = per_task[0][i] + per_task[1][i]  # each head gets its own gradient
        np.testing.assert_allclose(after[i], before[i] - 0.1 * own, atol=1e-5)
    cosine = g1 @ g2 / np.linalg.norm(g1) / np.linalg.norm(g2)
    np.testing.assert_allclose(logs["grad_cos/t0/t1"], cosine, rtol=1e-4)


def test_gradnorm_updates_its_weights_by_the_gradient_norms():
    submodels = shared_trunk()
    x, ys = task_data()
    _, per_task = hand_task_gradients(submodels, x, ys)
    norms = np.array(
        [np.sqrt(sum((g[i] ** 2).sum() for i in (0, 1))) for g in per_task]
    )
    joint = jk.JointModel(submodels)
    joint.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss="mse",
        weighting=jk.weighting.GradNorm(alpha=1.5, learning_rate=0.1),
    )
    joint.train_on_batch(x, ys)
    # First step: L / L(0) = 1 for both tasks, so each targets the mean norm.
    w = 1.0 - 0.1 * np.sign(norms - norms.mean()) * norms
    w = 2 * w / w.sum()
    got = ops.convert_to_numpy(joint._weighting.task_scales)
    np.testing.assert_allclose(got, w, rtol=1e-5)


def test_gradient_level_strategies_train_save_and_resume(tmp_path):
    x, ys = task_data(num_tasks=3, n=64)

    def build():
        joint = jk.JointModel(shared_trunk(num_tasks=3, seed=3))
        joint.compile(optimizer="adam", loss="mse", weighting=jk.weighting.GradNorm())
        return joint

    straight = build()
    straight.fit(x, ys, batch_size=16, epochs=2, shuffle=False, verbose=0)
    first = build()
    history = first.fit(x, ys, batch_size=16, epochs=1, shuffle=False, verbose=0)
    assert {"grad_cos/t0/t1", "grad_cos/t1/t2", "t2_weight"} <= set(history.history)
    first.save(tmp_path / "j.keras")
    resumed = keras.models.load_model(tmp_path / "j.keras")
    resumed.fit(x, ys, batch_size=16, epochs=1, shuffle=False, verbose=0)
    for w1, w2 in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(w1, w2, atol=1e-5)


def test_gradient_level_errors():
    with pytest.raises(ValueError, match="per_task_gradients.*one of"):
        jk.weighting.MGDA(per_task_gradients="loop")
    with pytest.raises(ValueError, match="`per_task_gradients` applies to gradient"):
        jk.weighting.DWA(per_task_gradients="sequential")
    config = jk.weighting.MGDA(per_task_gradients="sequential").get_config()
    assert jk.weighting.MGDA.from_config(config).per_task_gradients == "sequential"
    a = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)], name="a")
    b = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)], name="b")
    joint = jk.JointModel({"a": a, "b": b})
    joint.compile(loss="mse", weighting="pcgrad")
    x = np.zeros((8, 4), "float32")
    with pytest.raises(ValueError, match="share none"):
        joint.train_on_batch(x, np.zeros((8, 1), "float32"))
    with pytest.raises(ValueError, match="does not go with joint losses that set"):
        joint.compile(
            loss="mse",
            weighting="mgda",
            joint_losses=[jk.JointLoss(lambda t, p: ops.mean(p["a"]), updates=["a"])],
        )


@pytest.mark.parametrize("mode", ["vectorized", "sequential"])
@pytest.mark.parametrize("name", ["pcgrad", "mgda"])
def test_representation_variant_combines_gradients_at_the_trunk_output(name, mode):
    submodels = shared_trunk()
    x, ys = task_data()
    trunk = submodels["t0"].get_layer("trunk")
    heads = [m.layers[-1] for m in submodels.values()]
    z = keras.Variable(ops.convert_to_numpy(ops.stop_gradient(trunk(x))), name="z")

    def task_loss(k):
        return ops.mean(keras.losses.mean_squared_error(ys[f"t{k}"], heads[k](z)))

    rep = np.stack(
        [
            reference.value_and_grad(lambda k=k: task_loss(k), [z])[1][0].ravel()
            for k in (0, 1)
        ]
    )
    g1, g2 = rep
    if name == "pcgrad":
        combined = pcgrad_by_hand(rep, [0, 1])
    else:
        w = np.clip((g2 - g1) @ g2 / ((g1 - g2) @ (g1 - g2)), 0, 1)
        combined = w * g1 + (1 - w) * g2
    combined = ops.convert_to_tensor(combined.reshape(z.shape).astype("float32"))
    _, trunk_grads = reference.value_and_grad(
        lambda: ops.sum(trunk(x) * combined), trunk.trainable_variables
    )
    head_grads = [
        reference.value_and_grad(
            lambda k=k: ops.mean(
                keras.losses.mean_squared_error(ys[f"t{k}"], submodels[f"t{k}"](x))
            ),
            heads[k].trainable_variables,
        )[1]
        for k in (0, 1)
    ]
    before = [reference.weights_of(layer) for layer in [trunk, *heads]]
    joint = jk.JointModel(submodels)
    strategy = type(jk.weighting.get(name))(
        representation="trunk", per_task_gradients=mode
    )
    joint.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse", weighting=strategy)
    joint.train_on_batch(x, ys)
    for layer, w0, grads in zip([trunk, *heads], before, [trunk_grads, *head_grads]):
        for got, w, g in zip(reference.weights_of(layer), w0, grads):
            np.testing.assert_allclose(got, w - 0.1 * g, atol=1e-5)


def test_gradnorm_does_not_collapse_a_task_with_a_large_loss():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(8, activation="relu", name="trunk")(inputs)
    tasks = {
        f"t{k}": keras.Model(inputs, keras.layers.Dense(1, name=f"h{k}")(hidden))
        for k in range(2)
    }
    joint = jk.JointModel(tasks)
    joint.compile(
        optimizer=keras.optimizers.Adam(0.01), loss="mse", weighting="gradnorm"
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 4)).astype("float32")
    # t0's loss is about 100x t1's: its rate must use unweighted losses.
    ys = {"t0": 10 * x[:, :1] * x[:, 1:2], "t1": np.tanh(x[:, 2:3])}
    joint.fit(x, ys, batch_size=64, epochs=10, shuffle=False, verbose=0)
    scales = ops.convert_to_numpy(joint._weighting.task_scales)
    assert np.all(scales > 0.05), scales
    initial = ops.convert_to_numpy(joint._weighting.initial_losses)
    assert initial[0] > 10 * initial[1]


class LastStepLogs(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        self.logs = {k: float(v) for k, v in logs.items()}


def test_logged_weights_and_cosines_are_the_training_ones():
    x, ys = task_data(n=64)
    joint = jk.JointModel(shared_trunk())
    joint.compile(optimizer="sgd", loss="mse", weighting="mgda")
    last = LastStepLogs()
    history = joint.fit(
        x,
        ys,
        batch_size=16,
        epochs=1,
        validation_data=(x, ys),
        callbacks=[last],
        verbose=0,
    )
    for key in ("t0_weight", "t1_weight", "grad_cos/t0/t1"):
        np.testing.assert_allclose(history.history[key][0], last.logs[key], rtol=1e-6)
        assert f"val_{key}" not in history.history
    assert history.history["t0_weight"][0] != 1.0  # the MGDA coefficient
