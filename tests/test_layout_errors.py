"""Layouts that would train silently wrong, or fail obscurely, get a clear
error that names the argument, the submodel and what was expected; one
output of a multi-output submodel is picked with `jk.Output`, checked
against a hand-written step."""

import keras
import numpy as np
import pytest
from keras import ops

import joint_keras as jk
from tests import reference


def two_output_trunk():
    inputs = keras.Input((3,))
    features = keras.layers.Dense(4, activation="tanh", name="features")(inputs)
    logits = keras.layers.Dense(2, name="logits")(inputs)
    return keras.Model(inputs, [features, logits], name="trunk")


def head(name, inputs=4):
    return keras.Sequential([keras.Input((inputs,)), keras.layers.Dense(1)], name=name)


def test_a_bare_name_of_a_multi_output_submodel_lists_its_outputs():
    with pytest.raises(ValueError, match=r"reads 'trunk', which has 2 outputs \("):
        jk.JointModel(
            {"trunk": two_output_trunk(), "h": head("h")}, inputs={"h": "trunk"}
        )


@pytest.mark.parametrize("pick", ["features", 0], ids=["by_name", "by_position"])
def test_output_picks_one_output_and_trains_as_by_hand(pick, tmp_path):
    trunk, h = two_output_trunk(), head("h")
    joint = jk.JointModel(
        {"trunk": trunk, "h": h}, inputs={"h": jk.Output("trunk", pick)}
    )
    joint.compile(optimizer=keras.optimizers.SGD(0.1), loss={"h": "mse"})
    x = np.random.default_rng(0).normal(size=(8, 3)).astype("float32")
    y = np.ones((8, 1), "float32")
    # The loss reads "features": the "logits" layer gets no update.
    features, logits = trunk.get_layer("features"), trunk.get_layer("logits")
    variables = features.trainable_variables + h.trainable_variables
    unread = reference.weights_of(logits)

    def total():
        return ops.mean(keras.losses.mean_squared_error(y, h(trunk(x)[0])))

    _, want = reference.sgd_step(total, variables, 0.1)
    joint.train_on_batch(x, {"h": y})
    for got, w in zip(reference.weights_of(features, h), want):
        np.testing.assert_allclose(got, w, atol=1e-6)
    for got, w in zip(reference.weights_of(logits), unread):
        np.testing.assert_array_equal(got, w)
    joint.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0)["h"], joint.predict(x, verbose=0)["h"], atol=1e-6
    )


@pytest.mark.parametrize(
    "output, match",
    [
        ("scores", r"picks output 'scores' of 'trunk', whose outputs are \['features'"),
        (5, r"picks output 5 of 'trunk'"),
        (-1, "positions start at 0"),
        (1.5, "by position"),
    ],
)
def test_output_errors(output, match):
    with pytest.raises((ValueError, TypeError), match=match):
        jk.JointModel(
            {"trunk": two_output_trunk(), "h": head("h")},
            inputs={"h": jk.Output("trunk", output)},
        )


def test_output_of_a_single_output_submodel_is_an_error():
    with pytest.raises(ValueError, match="which has one output"):
        jk.JointModel(
            {"t": head("t", 3), "h": head("h", 1)}, inputs={"h": jk.Output("t", 0)}
        )


def agree(y_true, y_pred):
    return ops.mean(ops.square(y_pred["g"] - y_pred["d"]))


def test_a_stage_of_frozen_submodels_is_refused():
    g, d = head("g", 3), head("d", 3)
    d.trainable = False
    joint = jk.JointModel({"g": g, "d": d})
    with pytest.raises(ValueError, match=r"`alternate` stage \['d'\].*frozen"):
        joint.compile(
            joint_losses=[
                jk.JointLoss(agree, name="to_g", updates=["g"]),
                jk.JointLoss(agree, name="to_d", updates=["d"]),
            ],
            alternate=["g", "d"],
        )
    with pytest.raises(ValueError, match=r"`updates` of the joint losses \['to_d'\]"):
        joint.compile(joint_losses=[jk.JointLoss(agree, name="to_d", updates=["d"])])


def test_a_stage_frozen_after_compile_is_refused_at_the_first_step():
    g, d = head("g", 3), head("d", 3)
    joint = jk.JointModel({"g": g, "d": d})
    joint.compile(
        joint_losses=[
            jk.JointLoss(agree, name="to_g", updates=["g"]),
            jk.JointLoss(agree, name="to_d", updates=["d"]),
        ],
        alternate=["g", "d"],
    )
    d.trainable = False
    with pytest.raises(ValueError, match="it would train nothing"):
        joint.train_on_batch(np.ones((4, 3), "float32"), None)


def test_a_representation_no_other_submodel_reads_is_refused():
    shared = keras.layers.Dense(4, name="shared")
    a = keras.Sequential([keras.Input((3,)), shared, keras.layers.Dense(1)], name="a")
    b = keras.Sequential([keras.Input((3,)), shared, keras.layers.Dense(1)], name="b")
    lone = head("lone", 3)
    joint = jk.JointModel({"a": a, "b": b, "lone": lone})
    with pytest.raises(ValueError, match="`representation='lone'` names a submodel"):
        joint.compile(loss="mse", weighting=jk.weighting.MGDA(representation="lone"))


def test_gradient_penalty_on_a_critic_the_input_does_not_feed():
    gen, critic = head("gen", 3), head("critic", 1)
    joint = jk.JointModel({"gen": gen, "critic": critic}, inputs={"critic": "gen"})
    joint.compile(
        joint_losses=[
            jk.losses.GradientPenalty("critic", fake="gen", updates=["critic"])
        ]
    )
    with pytest.raises(ValueError, match=r"does not feed 'critic'.*jk.Concat"):
        joint.train_on_batch(np.ones((4, 3), "float32"), None)


def test_concat_of_incompatible_shapes_names_the_sources():
    a, b = (
        head("a", 3),
        keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)], name="b"),
    )
    c = head("c", 1)
    with pytest.raises(ValueError, match=r"`inputs\['c'\]` concatenates \['a', 'b'\]"):
        joint = jk.JointModel(
            {"a": a, "b": b, "c": c}, inputs={"c": jk.Concat("a", "b")}
        )
        joint.predict(np.ones((4, 3), "float32"), verbose=0)


def test_inputs_given_as_a_list():
    with pytest.raises(TypeError, match="`inputs` must be a dict mapping a submodel"):
        jk.JointModel({"a": head("a", 3), "b": head("b", 1)}, inputs=["a"])


NOISE_ERRORS = [
    ((4,), TypeError),
    (("ab",), TypeError),
    (((2.5,),), TypeError),
    (((-2,),), ValueError),
    (((2,), "normal", 1.5), TypeError),
]


@pytest.mark.parametrize("args, error", NOISE_ERRORS)
def test_noise_arguments(args, error):
    with pytest.raises(error, match="Received: (shape|seed)="):
        jk.Noise(*args)


def test_a_loss_dict_keyed_by_the_output_layers_of_a_list_output_submodel():
    # As `keras.Model.compile` accepts for a model returning a list.
    inputs = keras.Input((3,))
    two = keras.Model(
        inputs,
        [
            keras.layers.Dense(2, name="o1")(inputs),
            keras.layers.Dense(1, name="o2")(inputs),
        ],
        name="two",
    )
    joint = jk.JointModel({"two": two, "one": head("one", 3)})
    joint.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss={"two": {"o1": "mse", "o2": "mae"}, "one": "mse"},
    )
    x = np.random.default_rng(0).normal(size=(8, 3)).astype("float32")
    targets = [np.ones((8, 2), "float32"), np.zeros((8, 1), "float32")]
    _, want = reference.sgd_step(
        lambda: (
            ops.mean(keras.losses.mean_squared_error(targets[0], two(x)[0]))
            + ops.mean(keras.losses.mean_absolute_error(targets[1], two(x)[1]))
        ),
        two.trainable_variables,
        0.1,
    )
    logs = joint.train_on_batch(
        x, {"two": targets, "one": np.ones((8, 1), "float32")}, return_dict=True
    )
    assert {"two_o1_loss", "two_o2_loss"} <= set(logs)
    for got, w in zip(reference.weights_of(two), want):
        np.testing.assert_allclose(got, w, atol=1e-6)


def test_an_update_every_callable_returning_a_string_names_update_every():
    joint = jk.JointModel({"a": head("a", 3)})
    joint.compile("sgd", "mse", update_every={"a": lambda step: "yes"})
    with pytest.raises(
        TypeError, match="`update_every` must give a boolean for submodel 'a'"
    ):
        joint.train_on_batch(np.ones((4, 3), "float32"), np.ones((4, 1), "float32"))
