"""Every strategy in every step layout: what it does there, or a clear
refusal at `compile()`.

- Missing labels: a task whose batch has no labelled row is absent from
  that step for every strategy, exactly as if the batch had no target for
  it (checked against the run where it has none: weights and strategy
  state equal), so that, say, MGDA's simplex or FAMO's softmax does not
  see a phantom zero loss or gradient.
- Routed joint losses and `alternate`: loss-level strategies work, a
  strategy's own variables getting the gradient its paper defines
  (Uncertainty's log-variances, checked by hand); gradient-level ones, and
  FAMO and RLW with one task per stage, are refused with the reason.
- Update schedules: a strategy's state moves every training step, as
  without a schedule (checked against the run without one).
"""

import keras
import numpy as np
import pytest
from keras import ops

import joint_keras as jk
from tests.test_weighting_every_strategy import NAMES

TASKS = ("t0", "t1", "t2")

# TensorFlow traces each of these three-step models in about 2 s and runs
# it eagerly in under 1 (JAX's eager mode is the slower one, PyTorch's step
# is eager). What the step does for missing labels, schedules and NaN
# losses is the same code for every strategy: on TensorFlow it runs
# compiled for a stateful loss-level strategy, the trainable one, and two
# stateful gradient-level ones, eagerly for the others.
COMPILED_ON_TENSORFLOW = ("famo", "uncertainty", "gradnorm", "nash_mtl")


def has_state(name):
    """Whether strategy `name` keeps state beyond its weights and its count
    of skipped updates."""
    strategy = NAMES[name]()
    strategy.build_for_tasks(list(TASKS), [1.0] * len(TASKS))
    own = {id(strategy.skipped_updates), id(strategy.base_weights)}
    return any(id(v) not in own for v in strategy.variables)


STATEFUL = [name for name in NAMES if has_state(name)]


def run_eagerly(name):
    """Whether the tests of strategy `name` run its steps eagerly."""
    return (
        keras.backend.backend() == "tensorflow" and name not in COMPILED_ON_TENSORFLOW
    )


def shared_trunk_model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(6, activation="tanh", name="trunk")(inputs)
    return jk.JointModel(
        {
            t: keras.Model(inputs, keras.layers.Dense(1, name=f"{t}_head")(hidden))
            for t in TASKS
        }
    )


def batch(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(16, 4)).astype("float32")
    return x, {t: rng.normal(size=(16, 1)).astype("float32") for t in TASKS}


def state(model):
    return [
        np.array(ops.convert_to_numpy(v.value))
        for v in model.trainable_variables + model.weighting.variables
    ]


def adam_model(name):
    """The shared-trunk model compiled with Adam and strategy `name`."""
    model = shared_trunk_model()
    model.compile(
        optimizer=keras.optimizers.Adam(0.02),
        loss="mse",
        weighting=NAMES[name](),
        run_eagerly=run_eagerly(name),
    )
    return model


@pytest.mark.parametrize("name", list(NAMES))
def test_a_task_with_no_labelled_row_is_absent_for_the_strategy(name):
    runs = {}
    for mode in ("unlabelled", "absent"):
        model = adam_model(name)
        for step in range(3):
            x, y = batch(step)
            if mode == "unlabelled":  # t1's rows marked labelled, but at step 1.
                mask = np.full((len(x),), step != 1)
                y["t1"] = {"target": y["t1"], "mask": mask}
            elif step == 1:
                del y["t1"]
            model.train_on_batch(x, y)
        runs[mode] = state(model)
    for got, want in zip(runs["unlabelled"], runs["absent"]):
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=1e-6)


def two_heads(updates, seed=0):
    keras.utils.set_random_seed(seed)
    heads = {
        n: keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)], name=n)
        for n in "ab"
    }
    model = jk.JointModel(heads)

    def toward(target, name):
        def loss(y_true, y_pred):
            return ops.mean(ops.square(y_pred[name] - target))

        loss.__name__ = f"to_{name}"
        return loss

    terms = [
        jk.JointLoss(toward(1.0, "a"), updates=["a"] if updates else None),
        jk.JointLoss(toward(-1.0, "b"), updates=["b"] if updates else None),
    ]
    return model, terms, heads


LOSS_LEVEL = [n for n, cls in NAMES.items() if not cls.gradient_level]
GRADIENT_LEVEL = [n for n, cls in NAMES.items() if cls.gradient_level]


@pytest.mark.parametrize("name", GRADIENT_LEVEL)
@pytest.mark.parametrize("alternate", [None, True])
def test_gradient_level_strategies_refuse_routed_and_alternating_layouts(
    name, alternate
):
    model, terms, _ = two_heads(updates=True)
    with pytest.raises(ValueError, match="combines per-task gradients"):
        model.compile(joint_losses=terms, weighting=name, alternate=alternate)


@pytest.mark.parametrize("name", ["famo", "rlw"])
def test_famo_and_rlw_refuse_stages_of_one_task(name):
    model, terms, _ = two_heads(updates=True)
    with pytest.raises(ValueError, match="each train one task"):
        model.compile(joint_losses=terms, weighting=name, alternate=True)


@pytest.mark.parametrize("alternate", [None, True], ids=["routed", "alternating"])
def test_uncertainty_log_variances_get_their_own_gradient_in_every_layout(alternate):
    model, terms, heads = two_heads(updates=True)
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        joint_losses=terms,
        weighting="uncertainty",
        alternate=alternate,
    )
    x = np.random.default_rng(0).normal(size=(8, 3)).astype("float32")
    # Each stage's loss is computed before that stage updates: stage "a"
    # does not change "b", so both losses are those of the start.
    losses = [
        float(np.mean((ops.convert_to_numpy(heads[n](x)) - t) ** 2))
        for n, t in (("a", 1.0), ("b", -1.0))
    ]
    model.train_on_batch(x, None)
    # d/ds (exp(-s) L / 2 + s / 2) at s = 0.
    want = -0.1 * (0.5 - 0.5 * np.array(losses))
    got = ops.convert_to_numpy(model.weighting.log_variances.value)
    np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("name", LOSS_LEVEL)
def test_loss_level_strategies_see_the_same_losses_routed_or_not(name):
    # Routing changes which variables a term moves, not what the strategy
    # sees: after one step, its state is the unrouted run's.
    states = []
    for updates in (False, True):
        model, terms, _ = two_heads(updates)
        model.compile(
            optimizer=keras.optimizers.SGD(0.1),
            joint_losses=terms,
            weighting=NAMES[name](),
            run_eagerly=run_eagerly(name),
        )
        x = np.random.default_rng(0).normal(size=(8, 3)).astype("float32")
        model.train_on_batch(x, None)
        states.append(
            [ops.convert_to_numpy(v.value) for v in model.weighting.variables]
        )
    for got, want in zip(*states):
        np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("name", STATEFUL)
def test_strategy_state_moves_every_step_under_an_update_schedule(name):
    runs = []
    for update_every in (None, {"t1": 2}):
        model = shared_trunk_model()
        model.compile(
            optimizer=keras.optimizers.SGD(0.0),  # the model stays put
            loss="mse",
            weighting=NAMES[name](),
            update_every=update_every,
            run_eagerly=run_eagerly(name),
        )
        for step in range(3):
            model.train_on_batch(*batch(step))
        runs.append([ops.convert_to_numpy(v.value) for v in model.weighting.variables])
    for got, want in zip(*runs):
        np.testing.assert_allclose(got, want, atol=1e-6)
