"""Which variables a step moves, and with which optimizer, the same on every
backend.

- A variable that no term of the step reaches gets no update, and keeps its
  optimizer state (Adam's moments): on JAX too, where autodiff gives zeros
  rather than "no gradient" (a zero would still move it through momentum).
- A stage that updates nothing takes no optimizer step.
- The optimizer instance passed to `compile()` is the one that trains, with
  Keras's semantics (one step count, one set of moments per variable), under
  `alternate` and `update_every` too: checked against the same training
  written by hand with one Keras optimizer.
"""

import keras
import numpy as np
import pytest
from keras import ops

import joint_keras as jk
from tests import reference
from tests.models import mlp


def data(n=16, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(n, 3)).astype("float32"),
        rng.normal(size=(n, 2)).astype("float32"),
    )


def numpy_state(variables):
    return [np.array(ops.convert_to_numpy(v.value)) for v in variables]


def slots_of(optimizer, model):
    ids = [v.path.replace("/", "_") for v in model.trainable_variables]
    return [v for v in optimizer.variables if any(v.name.startswith(i) for i in ids)]


def reads_a(y_true, y_pred):
    return ops.mean(ops.square(y_pred["a"]))


def reads_b_without_gradient(y_true, y_pred):
    return ops.mean(ops.square(y_pred["a"] - ops.stop_gradient(y_pred["b"])))


@pytest.mark.parametrize(
    "joint_loss", [reads_a, reads_b_without_gradient], ids=["reads_a", "stopped_b"]
)
def test_a_submodel_no_term_reaches_keeps_weights_and_moments(joint_loss):
    a, b = mlp("a"), mlp("b")
    joint = jk.JointModel({"a": a, "b": b})
    joint.compile(
        optimizer=keras.optimizers.Adam(0.05),
        loss="mse",
        joint_losses=[jk.JointLoss(joint_loss, weight=0.1)],
    )
    x, y = data()
    joint.fit(x, {"a": y, "b": y}, batch_size=8, verbose=0)  # b's moments != 0
    b_before = numpy_state(b.trainable_variables)
    slots_before = numpy_state(slots_of(joint.optimizer, b))
    assert any(np.abs(s).max() > 0 for s in slots_before)
    joint.fit(x, {"a": y}, batch_size=8, epochs=3, verbose=0)
    for got, want in zip(numpy_state(b.trainable_variables), b_before):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(numpy_state(slots_of(joint.optimizer, b)), slots_before):
        np.testing.assert_array_equal(got, want)


def test_a_graph_head_with_no_labelled_row_keeps_its_state_beside_a_joint_loss():
    trunk = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)], name="trunk")
    heads = {n: mlp(n, inputs=4) for n in ("a", "b")}
    joint = jk.JointModel(
        {"trunk": trunk, **heads}, inputs={"a": "trunk", "b": "trunk"}
    )
    joint.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
        loss={"a": "mse", "b": "mse"},
        joint_losses=[jk.JointLoss(reads_a, weight=0.1)],
        missing_label="nan",
    )
    x, y = data()
    joint.train_on_batch(x, {"a": y, "b": y})
    before = numpy_state(heads["b"].trainable_variables)
    slots = numpy_state(slots_of(joint.optimizer, heads["b"]))
    trunk_before = numpy_state(trunk.trainable_variables)
    joint.train_on_batch(x, {"a": y, "b": np.full_like(y, np.nan)})
    for got, want in zip(numpy_state(heads["b"].trainable_variables), before):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(numpy_state(slots_of(joint.optimizer, heads["b"])), slots):
        np.testing.assert_array_equal(got, want)
    # The trunk, reached by `a`'s loss, moved.
    moved = numpy_state(trunk.trainable_variables)
    assert max(np.abs(g - w).max() for g, w in zip(moved, trunk_before)) > 0


def gan(optimizer, alternate=None, update_every=None, gen_reads_disc=True):
    keras.utils.set_random_seed(5)
    gen, disc = mlp("gen", inputs=2, outputs=2), mlp("disc", inputs=2, outputs=1)
    model = jk.JointModel(
        {"gen": gen, "disc": disc},
        inputs={"gen": jk.INPUT, "disc": jk.Concat("gen", jk.INPUT)},
    )

    def disc_loss(y_true, y_pred):
        logits = y_pred["disc"]
        half = ops.shape(logits)[0] // 2
        return ops.mean(ops.softplus(logits[:half])) + ops.mean(
            ops.softplus(-logits[half:])
        )

    def gen_loss(y_true, y_pred):
        logits = y_pred["disc"]
        if not gen_reads_disc:
            logits = ops.stop_gradient(logits)
        half = ops.shape(logits)[0] // 2
        return ops.mean(ops.softplus(-logits[:half]))

    model.compile(
        optimizer=optimizer,
        joint_losses=[
            jk.JointLoss(disc_loss, name="d", updates=["disc"]),
            jk.JointLoss(gen_loss, name="g", updates=["gen"]),
        ],
        alternate=alternate,
        update_every=update_every,
    )
    return model, gen, disc


def tensors(arrays):
    return [ops.convert_to_tensor(a) for a in arrays]


def hand_gan_losses(gen, disc, x):
    def d_loss():
        logits = disc(ops.concatenate([gen(x), x], axis=0))
        return ops.mean(ops.softplus(logits[: len(x)])) + ops.mean(
            ops.softplus(-logits[len(x) :])
        )

    def g_loss():
        return ops.mean(
            ops.softplus(-disc(ops.concatenate([gen(x), x], axis=0))[: len(x)])
        )

    return d_loss, g_loss


def test_one_adam_instance_trains_an_alternating_gan_as_by_hand():
    adam = keras.optimizers.Adam(0.01)
    model, gen, disc = gan(adam, alternate=["disc", "gen"])
    assert model.optimizer is adam
    _, ref_gen, ref_disc = gan(keras.optimizers.SGD(), alternate=["disc", "gen"])
    hand = keras.optimizers.Adam(0.01)
    hand.build(reference.unique_variables(ref_gen, ref_disc))
    x = np.random.default_rng(1).normal(size=(8, 2)).astype("float32")
    for _ in range(3):
        model.train_on_batch(x, None)
        d_loss, g_loss = hand_gan_losses(ref_gen, ref_disc, x)
        for loss, owner in ((d_loss, ref_disc), (g_loss, ref_gen)):
            _, grads = reference.value_and_grad(loss, owner.trainable_variables)
            hand.apply(tensors(grads), owner.trainable_variables)
    for got, want in zip(
        reference.weights_of(gen, disc), reference.weights_of(ref_gen, ref_disc)
    ):
        np.testing.assert_allclose(got, want, atol=1e-5)
    # One step count: two updates a step, as with the hand loop.
    assert int(ops.convert_to_numpy(adam.iterations.value)) == 6
    # The instance held is the one that trains: its learning rate counts.
    adam.learning_rate = 0.0
    before = reference.weights_of(gen, disc)
    model.train_on_batch(x, None)
    for got, want in zip(reference.weights_of(gen, disc), before):
        np.testing.assert_array_equal(got, want)


def test_one_optimizer_instance_with_an_update_schedule_as_by_hand():
    # Adam: its bias correction reads the one step count, which the
    # discriminator's updates advance on every step.
    adam = keras.optimizers.Adam(0.01)
    model, gen, disc = gan(adam, update_every={"gen": 2})
    assert model.optimizer.optimizers == [adam]
    _, ref_gen, ref_disc = gan(keras.optimizers.SGD())
    hand = keras.optimizers.Adam(0.01)
    hand.build(reference.unique_variables(ref_gen, ref_disc))
    x = np.random.default_rng(1).normal(size=(8, 2)).astype("float32")
    for step in range(4):
        model.train_on_batch(x, None)
        d_loss, g_loss = hand_gan_losses(ref_gen, ref_disc, x)
        _, d_grads = reference.value_and_grad(d_loss, ref_disc.trainable_variables)
        _, g_grads = reference.value_and_grad(g_loss, ref_gen.trainable_variables)
        if step % 2 == 0:
            hand.apply(
                tensors(d_grads + g_grads),
                ref_disc.trainable_variables + ref_gen.trainable_variables,
            )
        else:
            hand.apply(tensors(d_grads), ref_disc.trainable_variables)
    for got, want in zip(
        reference.weights_of(gen, disc), reference.weights_of(ref_gen, ref_disc)
    ):
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert int(ops.convert_to_numpy(adam.iterations.value)) == 4


def test_a_stage_that_reaches_nothing_takes_no_optimizer_step():
    # The generator's term stops the gradient of the discriminator's
    # verdict: it reaches no variable of "gen", so its stage applies nothing.
    adam = keras.optimizers.Adam(0.01)
    model, gen, _ = gan(adam, alternate=["disc", "gen"], gen_reads_disc=False)
    before = reference.weights_of(gen)
    x = np.random.default_rng(1).normal(size=(8, 2)).astype("float32")
    for _ in range(3):
        model.train_on_batch(x, None)
    assert int(ops.convert_to_numpy(adam.iterations.value)) == 3
    for got, want in zip(reference.weights_of(gen), before):
        np.testing.assert_array_equal(got, want)
